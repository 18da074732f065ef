"""npe2 sample data: the digital brain phantom as napari layers (raw series + truth maps).

Generated on the fly from the atlas shipped in the package (so it works from an installed wheel)
and cached in memory for the session. Every layer keeps its acquisition's geometry: ``scale`` is
the voxel size in mm and ``translate`` the position of the first voxel, so all layers overlay in
world (RAS mm) coordinates; 4D series have their echo/volume/flip-angle axis first. The truth maps carry
``metadata["truth"]`` and their ``map`` key, so the docks never take them as default inputs
(:mod:`napari_myelin.widgets._choices`).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from ._layers import volume_to_layer


@functools.lru_cache(maxsize=2)
def _phantom(size: str):
    from napari_myelin.sims.phantom import make_phantom

    return make_phantom(seed=0, size=size, snr=200.0, lesions=True)


#: (acquisition key, layer name, colormap)
_RAW = (
    ("mese", "phantom MESE", "gray"),
    ("dwi", "phantom DWI", "gray"),
    ("gre_mag", "phantom GRE magnitude", "gray"),
    ("gre_phase", "phantom GRE phase", "gray"),
    ("spgr", "phantom SPGR", "gray"),
    ("b1", "phantom B1", "viridis"),
)
#: (modality, truth map, layer name, colormap, contrast limits, factor, units)
_TRUTH = (
    ("mese", "mwf", "truth MWF (%)", "inferno", (0, 25), 100.0, "%"),
    ("dwi", "fa", "truth FA", "gray", (0, 1), 1.0, "fraction"),
    ("dwi", "md", "truth MD", "gray", (0, 3e-3), 1.0, "mm^2/s"),
    ("dwi", "mk", "truth MK", "gray", (0, 1.5), 1.0, ""),
    ("gre", "chi", "truth chi (ppm)", "gray", (-0.1, 0.15), 1.0, "ppm"),
    ("spgr", "t1", "truth T1 (s)", "magma", (0, 4), 1.0, "s"),
)


def phantom_layers(size: str = "full") -> list[tuple]:
    """Layer data tuples of the phantom (``size`` ``"full"``: 2 mm subject; ``"small"``: 4 mm)."""
    ph = _phantom(size)
    layers = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*oblique.*")
        for key, name, cmap in _RAW:
            vol = ph.acq[key]
            layers.append(volume_to_layer(vol, name=name, colormap=cmap, visible=False,
                                          metadata={"units": vol.metadata.get("Units", "")}))
        for modality, key, name, cmap, clim, factor, units in _TRUTH:
            vol = ph.truth[modality][key]
            layers.append(volume_to_layer(vol.with_data(vol.data.astype(np.float32) * factor), name=name,
                                          colormap=cmap, contrast_limits=clim, visible=key == "mwf",
                                          metadata={"units": units, "map": key, "truth": True}))
        labels = ph.truth["mese"]["labels"]
        data, attrs, _ = volume_to_layer(labels.with_data(labels.data.astype(np.int32)), name="truth tracts",
                                         layer_type="labels", opacity=0.4, visible=False, metadata={"truth": True})
        lut = ph.lut
        attrs["metadata"]["lut"] = lut.to_dict(orient="list")
        attrs["features"] = lut
        layers.append((data, attrs, "labels"))
    return layers


def myelin_phantom() -> list[tuple]:
    """"Myelin phantom": the 2 mm demo subject (about a minute the first time in a session)."""
    return phantom_layers("full")


def myelin_phantom_small() -> list[tuple]:
    """"Myelin phantom (small)": the 4 mm test subject (a few seconds)."""
    return phantom_layers("small")

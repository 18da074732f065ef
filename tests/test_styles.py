"""Maps that explain themselves, without Qt: robust contrast limits, names with units, NaN outside the mask,
diverging colormaps centred at 0, and the grouped "oblique image" warning."""

from __future__ import annotations

import warnings

import numpy as np

from napari_myelin._layers import collect_warnings, group_warnings, volume_to_layer
from napari_myelin._styles import display_style, map_layer, robust_limits
from napari_myelin.io.volume import Volume

from .conftest import oblique_affine


def test_robust_limits_follow_the_data_inside_the_mask():
    rng = np.random.default_rng(0)
    mk = rng.uniform(-0.4, 7.9, (20, 20, 10))  # the MK range the issue saw, shown at 0-2 before
    mask = np.zeros(mk.shape, bool)
    mask[5:15, 5:15] = True
    mk[~mask] = 100.0  # outside the mask: ignored
    lo, hi = robust_limits(mk, mask)
    np.testing.assert_allclose((lo, hi), np.percentile(mk[mask], [1, 99]))
    assert -0.4 < lo < 0.0 and 7.7 < hi < 7.9
    chi = rng.normal(0.02, 0.05, (30, 30, 5))
    lo, hi = robust_limits(chi, diverging=True)
    assert lo == -hi and hi == max(abs(v) for v in np.percentile(chi, [1, 99]))
    assert robust_limits(np.full(5, np.nan)) == (0.0, 1.0)
    lo, hi = robust_limits(np.full(5, 3.0))
    assert lo == 3.0 and hi > lo


def test_map_layer_names_units_nan_and_colormap():
    chi = np.linspace(-0.2, 0.3, 60).reshape(3, 4, 5)
    mask = chi > -0.1
    data, kw = map_layer("chi", chi, units="ppm", source="sub-01 GRE phase", mask=mask, metadata={"method": "QSM"})
    assert kw["name"] == "chi (ppm) · sub-01 GRE phase"  # the label with units first, then the input
    assert kw["colormap"] == "coolwarm" and kw["contrast_limits"][0] == -kw["contrast_limits"][1]
    assert np.isnan(data[~mask]).all() and np.array_equal(data[mask], chi[mask].astype(np.float32))
    assert kw["metadata"] == {"method": "QSM", "units": "ppm", "map": "chi", "label": "chi (ppm)"}
    _, kw = map_layer("mwf", np.ones((2, 2, 2)), units="%")
    assert kw["name"] == "MWF (%)" and kw["colormap"] == "magma"
    style, factor = display_style("mk", "")
    assert style["metadata"]["map"] == "mk" and factor == 1.0


def test_oblique_warnings_of_one_action_become_one_sentence():
    vol = Volume(np.zeros((4, 4, 3), np.float32), oblique_affine(angle_deg=12.0))
    with collect_warnings() as messages:
        for name in ("FA · dwi", "MD (mm^2/s) · dwi", "MK · dwi"):
            volume_to_layer(vol, name=name)
        warnings.warn("something else happened", stacklevel=1)
    assert len(messages) == 4
    text = group_warnings("DKI fit", messages)
    assert text.startswith("DKI fit: the maps (FA · dwi, MD (mm^2/s) · dwi, MK · dwi) are oblique by 12.0 deg;")
    assert text.count("oblique") == 1 and text.endswith("something else happened.")
    assert group_warnings("DKI fit", []) is None

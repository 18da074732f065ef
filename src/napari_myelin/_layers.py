"""Adapters between core :class:`~napari_myelin.io.volume.Volume` objects and napari layer data.

No Qt here: these functions build and read plain ``(data, kwargs, layer_type)`` tuples, so they are
shared by the npe2 reader/writer, the sample data and every dock widget.

Display geometry
----------------
napari slices along array axes and cannot display oblique affines, so a volume is shown on the
voxel axes nearest to RAS+ (as FSLeyes and ITK-SNAP do when they "display in world space without
resampling"): the array is flipped/permuted to RAS voxel order and then reversed to napari's
``(z, y, x)`` order (axial slices on the slider, ``(echo, z, y, x)`` for a 4D series with the echo
axis first and scale 1). ``scale`` is the voxel size (mm) and ``translate`` the world position of
the first voxel, so napari's world coordinates are RAS millimetres (in z, y, x order) for
non-oblique images. The true affine and the permutation travel in ``metadata["napari_myelin"]``
and :func:`layer_to_volume` undoes them exactly, so writers restore the original file's voxel
order and affine bit for bit.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Any, Iterator

import nibabel as nib
import numpy as np

from napari_myelin.io.volume import Volume, obliquity_deg

META_KEY = "napari_myelin"


def _ornt(affine: np.ndarray) -> np.ndarray:
    return nib.orientations.io_orientation(affine)


def to_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder a stored array (3D, or 4D with the series last) into napari display order."""
    ornt = _ornt(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    spatial = ras.transpose((2, 1, 0) + tuple(range(3, ras.ndim)))
    if spatial.ndim == 4:
        spatial = np.moveaxis(spatial, 3, 0)
    return np.ascontiguousarray(spatial)


def from_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: napari order back to the stored voxel order."""
    arr = np.asarray(data)
    if arr.ndim == 4:
        arr = np.moveaxis(arr, 0, 3)
    ras = arr.transpose((2, 1, 0) + tuple(range(3, arr.ndim)))
    inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), _ornt(affine))
    return np.ascontiguousarray(nib.orientations.apply_orientation(ras, inverse))


def display_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``scale`` and ``translate`` (z, y, x order, mm) of a volume shown in display order."""
    ornt = _ornt(affine)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape[:3])
    zooms = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))
    origin = ras_affine[:3, 3]
    return zooms[::-1].copy(), origin[::-1].copy()


def volume_to_layer(
    vol: Volume, name: str | None = None, layer_type: str = "image", **kwargs: Any
) -> tuple[np.ndarray, dict, str]:
    """Layer data tuple for ``vol`` (see the module docstring for the geometry).

    A 4D series gets its series axis first with scale 1 and translate 0.
    """
    data = to_display(vol.data, vol.affine)
    scale, translate = display_geometry(vol.affine, vol.shape)
    if vol.data.ndim == 4:
        scale = np.r_[1.0, scale]
        translate = np.r_[0.0, translate]
    oblique = obliquity_deg(vol.affine)
    if oblique > 1e-3:
        warnings.warn(
            f"{vol.path or name}: the image is oblique by {oblique:.1f} deg; napari shows it on the nearest "
            "canonical axes without resampling (world positions are approximate, the saved affine is exact).",
            stacklevel=2,
        )
    meta = dict(kwargs.pop("metadata", {}))
    meta[META_KEY] = {
        "affine": vol.affine.tolist(),
        "shape": list(vol.shape),
        "sidecar": vol.metadata,
        "path": str(vol.path) if vol.path else None,
        "bvals": None if vol.bvals is None else vol.bvals.tolist(),
        "bvecs": None if vol.bvecs is None else vol.bvecs.tolist(),
    }
    attrs = {"name": name or vol.name, "scale": scale, "translate": translate, "metadata": meta}
    attrs.update(kwargs)
    return data, attrs, layer_type


def layer_to_volume(data: np.ndarray, metadata: dict, *, scale=None, translate=None) -> Volume:
    """Rebuild the stored-orientation :class:`Volume` of a layer made by :func:`volume_to_layer`.

    Layers that did not come from a file (e.g. drawn in napari) have no stored affine: their
    ``scale``/``translate`` then define a RAS-aligned affine.
    """
    info = (metadata or {}).get(META_KEY)
    arr = np.asarray(data)
    if info is not None:
        affine = np.asarray(info["affine"], dtype=float)
        sidecar = dict(info.get("sidecar") or {})
        vol = Volume(from_display(arr, affine), affine, None, sidecar, None)
        if info.get("bvals") is not None:
            vol.bvals = np.asarray(info["bvals"], dtype=float)
            vol.bvecs = np.asarray(info["bvecs"], dtype=float)
        return vol
    spatial_scale = np.ones(3) if scale is None else np.asarray(scale, dtype=float)[-3:]
    spatial_translate = np.zeros(3) if translate is None else np.asarray(translate, dtype=float)[-3:]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spatial_scale[::-1])
    affine[:3, 3] = spatial_translate[::-1]
    return Volume(from_display(arr, affine), affine, None, {}, None)



_OBLIQUE = re.compile(r"^(?P<name>.*?): the image is oblique by (?P<deg>[0-9.]+) deg; (?P<rest>.*)$")


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Record the warnings raised inside the block (instead of one notification each); yields their messages."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(str(w.message) for w in caught)


def group_warnings(action: str, messages: list[str]) -> str | None:
    """One sentence for the warnings of one action (``None`` when there were none): the oblique-image warnings
    of several maps become one, naming the maps, other messages follow once each."""
    oblique, others = [], []
    for message in dict.fromkeys(messages):
        match = _OBLIQUE.match(message)
        (oblique if match else others).append(match or message)
    parts = []
    if oblique:
        names = ", ".join(m["name"] for m in oblique)
        degrees = max(float(m["deg"]) for m in oblique)
        what = f"the maps ({names}) are" if len(oblique) > 1 else f"{names} is"
        parts.append(f"{what} oblique by {degrees:.1f} deg; {oblique[0]['rest']}")
    parts.extend(others)
    return f"{action}: " + " ".join(p if p.endswith(".") else p + "." for p in parts) if parts else None

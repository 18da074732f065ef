"""Shapes drawn on one slice of a 3D volume rasterised into a label array (napari Shapes -> ROI)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from napari_myelin.utils.errors import InputError


def polygons_to_labels(
    polygons: Sequence[np.ndarray],
    shape: Sequence[int],
    values: Sequence[int],
    *,
    kinds: Sequence[str] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rasterise planar shapes (drawn on one slice of a 3D volume) into a label array.

    Parameters
    ----------
    polygons : sequence of (N, 3) arrays
        Vertices in voxel coordinates of the label array (napari data order). Each shape must lie
        in one plane of constant coordinate along one axis (the slice it was drawn on).
    shape : 3 ints
        Shape of the label array.
    values : sequence of int
        Label painted for each shape (later shapes paint over earlier ones).
    kinds : sequence of str, optional
        napari shape types; ``"ellipse"`` (4 bounding-box corners) is filled as an ellipse,
        ``"polygon"``/``"rectangle"`` as polygons (voxels whose centre is inside, as
        ``skimage.draw.polygon``); ``"line"``/``"path"`` enclose no area and are refused.
    out : ndarray, optional
        Label array to paint into (modified and returned).

    Raises
    ------
    InputError
        A shape that is not planar along one voxel axis, lies outside the volume, or has no area.
    """
    from skimage import draw

    shape = tuple(int(s) for s in shape)
    labels = np.zeros(shape, dtype=np.int32) if out is None else out
    kinds = list(kinds) if kinds is not None else ["polygon"] * len(polygons)
    for verts, value, kind in zip(polygons, values, kinds):
        # snap round-off of world <-> voxel conversions (napari keeps shapes in float32: a vertex
        # at 1.9999994 is the voxel centre 2)
        verts = np.round(np.asarray(verts, dtype=float), 4)
        if kind in ("line", "path"):
            raise InputError(f"Shapes -> ROI: a {kind} encloses no area; draw polygons, rectangles or ellipses.")
        if verts.ndim != 2 or verts.shape[1] != 3:
            raise InputError("Shapes -> ROI: shapes must be drawn on a slice of the 3D volume.")
        flat_axes = np.flatnonzero(np.ptp(verts, axis=0) < 0.5)
        if flat_axes.size == 0:
            raise InputError("Shapes -> ROI: a shape is not drawn on one slice; draw it in a 2D view of one slice.")
        axis = int(flat_axes[0])
        index = int(np.round(verts[:, axis].mean()))
        if not 0 <= index < shape[axis]:
            raise InputError(
                f"Shapes -> ROI: a shape lies on slice {index}, outside the volume (0..{shape[axis] - 1})."
            )
        plane_axes = [a for a in range(3) if a != axis]
        plane_shape = (shape[plane_axes[0]], shape[plane_axes[1]])
        r, c = verts[:, plane_axes[0]], verts[:, plane_axes[1]]
        if kind == "ellipse":
            rr, cc = draw.ellipse((r.min() + r.max()) / 2, (c.min() + c.max()) / 2, np.ptp(r) / 2, np.ptp(c) / 2,
                                  shape=plane_shape)
        else:
            rr, cc = draw.polygon(r, c, shape=plane_shape)
        if rr.size == 0:
            raise InputError("Shapes -> ROI: a shape covers no voxel centre (too small or outside the volume).")
        sl = [slice(None)] * 3
        sl[axis] = index
        plane = labels[tuple(sl)]
        plane[rr, cc] = int(value)
    return labels

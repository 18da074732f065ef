"""Brain masks shared by the estimators (MWF's automatic mask, QSM's mask from the magnitude).

A helper below the estimators, so that no estimator imports another's module.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_myelin.utils.errors import InputError


def brain_mask(magnitude: np.ndarray, *, median_radius: int = 2, numpass: int = 2,
               max_voxels: int = 4_000_000) -> np.ndarray:
    """Brain mask from the magnitude (3D, or 4D echoes combined by root-sum-of-squares).

    dipy's ``median_otsu`` (median filter + Otsu threshold), then the largest connected component
    with its holes filled. No erosion: the cortical edge is kept. Volumes above ``max_voxels`` are
    processed on a 2x block-averaged magnitude with the median radius halved (the same physical
    filter; the mask edge is then known to 2 voxels), which makes the median filter ~20x cheaper.
    """
    from dipy.segment.mask import median_otsu

    mag = np.asarray(magnitude, dtype=np.float32)
    shape = mag.shape[:3]
    factor = 2 if int(np.prod(shape)) > max_voxels else 1
    if factor > 1:  # block-average each echo first, then combine: the median filter is the cost
        crop = tuple(n - n % 2 for n in shape)
        m = mag[: crop[0], : crop[1], : crop[2]]
        m = m.reshape((crop[0] // 2, 2, crop[1] // 2, 2, crop[2] // 2, 2) + mag.shape[3:]).mean(axis=(1, 3, 5))
        median_radius = max(1, int(round(median_radius / 2)))
    else:
        m = mag
    if m.ndim == 4:
        m = np.sqrt((m * m).sum(-1))
    _, mask = median_otsu(m, median_radius=median_radius, numpass=numpass)
    lab, n = ndimage.label(mask)
    if n == 0:
        raise InputError("magnitude: no brain was found by Otsu thresholding; supply a brain mask.")
    if n > 1:
        sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    mask = ndimage.binary_fill_holes(mask)
    if factor > 1:
        up = np.zeros(shape, bool)
        big = mask.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        up[: big.shape[0], : big.shape[1], : big.shape[2]] = big
        mask = up
    return mask

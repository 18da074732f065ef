"""What a registration takes and how well it did: input checks, similarity and overlap measures.

:func:`reference_image` picks the 3D image of a series that is registered, :func:`check_image`
refuses images without signal; :func:`similarity` (normalised mutual information and coverage of
the fixed brain) judges a result, and :func:`dice` / :func:`mean_label_dice` compare masks and
label maps (benchmarks and tests).

References
----------
Studholme C., Hill D.L.G., Hawkes D.J., "An overlap invariant entropy measure of 3D medical image
alignment", Pattern Recognition 32, 71-86 (1999).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import Volume


def image_name(vol: Volume, default: str) -> str:
    """The file an image was read from, or ``default`` (for messages)."""
    return str(vol.path) if vol.path is not None else default


def reference_image(vol: Volume) -> Volume:
    """The 3D image a (possibly 4D) acquisition is registered with.

    The first volume of a series: the first echo of a multi-echo series, the first flip angle of
    an SPGR series, and for DWI the first b=0 volume (b < 50 s/mm^2) when the b-values are known.
    """
    data = np.asarray(vol.data)
    if data.ndim == 3:
        return vol
    if data.ndim != 4:
        raise InputError(f"{image_name(vol, 'image')}: has shape {data.shape}; registration needs a 3D or 4D image.")
    index = 0
    if vol.bvals is not None and np.any(np.asarray(vol.bvals) < 50):
        index = int(np.flatnonzero(np.asarray(vol.bvals) < 50)[0])
    out = Volume(data[..., index], vol.affine, vol.header, dict(vol.metadata), vol.path)
    return out


def check_image(vol: Volume, what: str) -> None:
    """Refuse an image registration cannot use: not 3D, empty (constant), or without finite voxels."""
    data = np.asarray(vol.data)
    name = image_name(vol, what)
    if data.ndim != 3:
        raise InputError(f"{name}: has shape {data.shape}; registration needs one 3D volume.")
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    if finite.size == 0:
        raise InputError(f"{name}: has no finite voxel; it holds no image to register.")
    if np.ptp(finite) == 0:
        raise InputError(f"{name}: is empty (every voxel is {finite.flat[0]:g}); there is nothing to register.")
    if np.count_nonzero(finite != np.median(finite)) < 64:
        raise InputError(f"{name}: has fewer than 64 voxels of signal; give an image of the head.")


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Normalised mutual information ``(H(a) + H(b)) / H(a, b) - 1`` of two samples (0 to 1).

    Entropies of 32-bin histograms between the 1st and 99th percentiles; 0 for independent
    samples (or a constant one), 1 for a one-to-one relation (Studholme et al. 1999).
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size < 2:
        return 0.0

    def _edges(x):
        lo, hi = np.percentile(x, [1, 99])
        return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)

    joint, _, _ = np.histogram2d(np.clip(a, *_edges(a)[[0, -1]]), np.clip(b, *_edges(b)[[0, -1]]),
                                 bins=(_edges(a), _edges(b)))
    p = joint / joint.sum()

    def _h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    h_ab = _h(p)
    if h_ab == 0:
        return 0.0
    return (_h(p.sum(axis=1)) + _h(p.sum(axis=0))) / h_ab - 1.0


def brain_mask(template: Volume) -> np.ndarray:
    """Voxels of a template above 20 % of its 99th percentile (the head/brain, not the background)."""
    data = np.nan_to_num(np.asarray(template.data, dtype=float))
    return data > 0.2 * np.percentile(data, 99)


def similarity(warped: Volume, fixed: Volume, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Normalised mutual information and coverage of a warped image with the fixed image.

    Returns
    -------
    nmi : float
        :func:`normalized_mutual_information` inside ``mask`` (default :func:`brain_mask` of ``fixed``).
    overlap : float
        Fraction of ``mask`` where the warped image is non-zero.
    """
    mask = brain_mask(fixed) if mask is None else np.asarray(mask, bool)
    w = np.nan_to_num(np.asarray(warped.data, dtype=float))[mask]
    f = np.asarray(fixed.data, dtype=float)[mask]
    overlap = float(np.count_nonzero(w) / max(mask.sum(), 1))
    return normalized_mutual_information(w, f), overlap


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A∩B| / (|A| + |B|)`` of two boolean masks (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def mean_label_dice(a: np.ndarray, b: np.ndarray, labels: Sequence[int] | None = None) -> float:
    """Mean :func:`dice` over the labels present in ``a`` or ``b`` (0 = background excluded)."""
    a, b = np.asarray(a), np.asarray(b)
    if labels is None:
        labels = np.union1d(np.unique(a), np.unique(b))
    scores = [dice(a == k, b == k) for k in labels if k != 0]
    return float(np.mean(scores)) if scores else 1.0

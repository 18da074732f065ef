"""Accuracy of a susceptibility map against a known truth (QSM reconstruction challenge 2.0 metrics).

NRMSE and HFEN in %, SSIM (dimensionless) of maps in ppm, and the fraction of a true mask kept in
the final map.

References
----------
QSM Challenge 2.0 Organization Committee (Marques JP et al.). QSM reconstruction challenge 2.0: design
and report of results. MRM 86:526-542 (2021).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_myelin.reconst.inverse import _bbox


def qsm_metrics(chi: np.ndarray, chi_true: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """NRMSE (%), HFEN (%) and SSIM of ``chi`` against ``chi_true`` within ``mask``.

    Both maps are demeaned within the mask (the susceptibility reference is arbitrary). NRMSE
    ``= 100 ||x - y|| / ||y||``; HFEN the same on Laplacian-of-Gaussian filtered maps (sigma 1.5
    voxels, the 15^3 LoG of the 2016/2.0 challenges); SSIM (scikit-image, Gaussian window sigma 1.5,
    K1 = 0.01, K2 = 0.001 as in challenge 2.0) on the mask's bounding box with both maps clipped to
    [-0.2, 0.2] ppm (data range 0.4 ppm).
    """
    from skimage.metrics import structural_similarity

    mask = np.asarray(mask, bool)
    x = np.where(mask, chi - chi[mask].mean(), 0).astype(np.float64)
    y = np.where(mask, chi_true - chi_true[mask].mean(), 0).astype(np.float64)
    nrmse = 100 * np.linalg.norm((x - y)[mask]) / np.linalg.norm(y[mask])
    lx, ly = ndimage.gaussian_laplace(x, 1.5, truncate=4.7), ndimage.gaussian_laplace(y, 1.5, truncate=4.7)
    hfen = 100 * np.linalg.norm((lx - ly)[mask]) / np.linalg.norm(ly[mask])
    sl = _bbox(mask, 0)
    xs, ys = np.clip(x[sl], -0.2, 0.2), np.clip(y[sl], -0.2, 0.2)
    ssim = structural_similarity(xs, ys, data_range=0.4, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, K1=0.01, K2=0.001)
    return {"nrmse": float(nrmse), "hfen": float(hfen), "ssim": float(ssim)}


def edge_fraction(result_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Fraction of ``true_mask`` voxels that have a value in the final map (``result_mask``)."""
    t = np.asarray(true_mask, bool)
    return float((np.asarray(result_mask, bool) & t).sum() / max(t.sum(), 1))

r"""Scalar maps of a fitted DKI model: FA, and the analytical kurtosis maps of dipy's Cython routines.

- MK: :math:`\sum F_1(\lambda)\hat W_{iiii} + F_2(\lambda)\hat W_{iijj}` with Carlson's elliptic
  integrals :math:`R_F, R_D` (:mod:`napari_myelin.reconst.dki.elliptic`);
- AK: :math:`\hat W_{1111}\,\bar D^2/\lambda_1^2`; RK: :math:`G_1\hat W_{2222} + G_1\hat W_{3333} +
  G_2\hat W_{2233}`, where :math:`\hat W` is :math:`W` rotated into the eigenvectors of :math:`D`;
- MKT :math:`=\mathrm{tr}(W)/5` (Hansen et al. 2013) and KFA
  :math:`=\|W - \mathrm{MKT}\,I^{(4)}\|_F/\|W\|_F` (Glenn et al. 2015).

MK, AK, RK and MKT are clipped to ``[min_kurtosis, max_kurtosis]`` = ``[-3/7, 10]`` as dipy's
``fit.mk()`` etc.; pass e.g. ``min_kurtosis=0, max_kurtosis=3`` to clip for display instead.
Eigenvalues in mm^2/s; kurtosis dimensionless.

References
----------
Tabesh A et al., "Estimation of tensors and tensor-derived measures in diffusional kurtosis
imaging", Magn Reson Med 65:823 (2011).
Hansen B et al., "Experimentally and computationally fast method for estimation of a mean
kurtosis", Magn Reson Med 69:1754 (2013). Glenn GR et al., NMR Biomed 28:448 (2015).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.reconst.dki.elliptic import _f1, _f2, _g1, _g2, _positive

#: Default kurtosis limits of dipy's ``fit.mk()``, ``fit.ak()``, ``fit.rk()``, ``fit.mkt()``.
MIN_KURTOSIS = -3.0 / 7.0
MAX_KURTOSIS = 10.0

#: (i, j, k, l) of the 15 unique kurtosis tensor elements, in dipy's order.
KT_INDICES = (
    (0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 0, 1), (0, 0, 0, 2),
    (0, 1, 1, 1), (1, 1, 1, 2), (0, 2, 2, 2), (1, 2, 2, 2), (0, 0, 1, 1),
    (0, 0, 2, 2), (1, 1, 2, 2), (0, 0, 1, 2), (0, 1, 1, 2), (0, 1, 2, 2),
)


def full_kurtosis_tensor(kt: np.ndarray) -> np.ndarray:
    """The symmetric ``(..., 3, 3, 3, 3)`` kurtosis tensor from its 15 unique elements (dipy order)."""
    kt = np.asarray(kt, dtype=float)
    index = np.empty((3, 3, 3, 3), dtype=int)
    lookup = {tuple(sorted(t)): e for e, t in enumerate(KT_INDICES)}
    for i in range(3):
        for j in range(3):
            for k in range(3):
                for m in range(3):
                    index[i, j, k, m] = lookup[tuple(sorted((i, j, k, m)))]
    return kt[..., index]


def rotated_kurtosis(kt: np.ndarray, evecs: np.ndarray, pairs) -> dict:
    r"""Elements :math:`\hat W_{ppqq} = \sum W_{ijkl} e_{ip} e_{jp} e_{kq} e_{lq}` in the eigenvector frame.

    Parameters
    ----------
    kt : ndarray (n, 15)
    evecs : ndarray (n, 3, 3)
        Eigenvectors as columns.
    pairs : iterable of (p, q)
    """
    w = full_kurtosis_tensor(kt).reshape(kt.shape[0], 9, 9)
    out = {}
    outer = {}
    for p, q in pairs:
        for r in (p, q):
            if r not in outer:
                v = evecs[:, :, r]
                outer[r] = (v[:, :, None] * v[:, None, :]).reshape(-1, 9)
        out[(p, q)] = np.einsum("na,nab,nb->n", outer[p], w, outer[q])
    return out


def kurtosis_maps(
    evals: np.ndarray,
    evecs: np.ndarray,
    kt: np.ndarray,
    *,
    min_kurtosis: float | None = MIN_KURTOSIS,
    max_kurtosis: float | None = MAX_KURTOSIS,
) -> dict[str, np.ndarray]:
    """Analytical MK, AK, RK, plus MKT and KFA, of ``n`` voxels (dipy's ``fit.mk()`` ... semantics).

    Parameters
    ----------
    evals : ndarray (n, 3)
        Diffusion tensor eigenvalues (mm^2/s), sorted descending.
    evecs : ndarray (n, 3, 3)
        Eigenvectors as columns.
    kt : ndarray (n, 15)
        Kurtosis tensor elements.
    min_kurtosis, max_kurtosis : float or None
        Clipping of MK, AK, RK and MKT (``None``: no clipping).

    Returns
    -------
    dict
        ``mk``, ``ak``, ``rk``, ``mkt``, ``kfa`` and ``mk_unclipped`` (MK before clipping).
    """
    lo = -np.inf if min_kurtosis is None else float(min_kurtosis)
    hi = np.inf if max_kurtosis is None else float(max_kurtosis)
    l1, l2, l3 = evals[:, 0], evals[:, 1], evals[:, 2]
    pos = _positive(l1, l2, l3)
    rot = rotated_kurtosis(kt, evecs, [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)])
    mk = (
        _f1(l1, l2, l3) * rot[(0, 0)] + _f1(l2, l1, l3) * rot[(1, 1)] + _f1(l3, l2, l1) * rot[(2, 2)]
        + _f2(l1, l2, l3) * rot[(1, 2)] + _f2(l2, l1, l3) * rot[(0, 2)] + _f2(l3, l2, l1) * rot[(0, 1)]
    )
    mk = np.where(pos, mk, 0.0)
    md = (l1 + l2 + l3) / 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ak = np.where(pos, rot[(0, 0)] * md * md / (l1 * l1), 0.0)
    rk = np.where(
        pos, _g1(l1, l2, l3) * rot[(1, 1)] + _g1(l1, l3, l2) * rot[(2, 2)] + _g2(l1, l2, l3) * rot[(1, 2)], 0.0
    )
    mkt = (kt[:, 0] + kt[:, 1] + kt[:, 2] + 2 * kt[:, 9] + 2 * kt[:, 10] + 2 * kt[:, 11]) / 5.0
    return {
        "mk": np.where(pos, np.clip(mk, lo, hi), 0.0),
        "ak": np.where(pos, np.clip(ak, lo, hi), 0.0),
        "rk": np.where(pos, np.clip(rk, lo, hi), 0.0),
        "mkt": np.clip(mkt, lo, hi),
        "kfa": kurtosis_fa(kt),
        "mk_unclipped": mk,
    }


def kurtosis_fa(kt: np.ndarray) -> np.ndarray:
    r"""Kurtosis fractional anisotropy :math:`\|W - \bar W I^{(4)}\|_F / \|W\|_F` (0 where MKT <= 1e-8)."""
    w = (kt[:, 0] + kt[:, 1] + kt[:, 2] + 2 * kt[:, 9] + 2 * kt[:, 10] + 2 * kt[:, 11]) / 5.0
    cross = 4.0 * (kt[:, 3:9] ** 2).sum(axis=1) + 12.0 * (kt[:, 12:15] ** 2).sum(axis=1)
    a = (
        ((kt[:, 0:3] - w[:, None]) ** 2).sum(axis=1)
        + 6.0 * ((kt[:, 9:12] - w[:, None] / 3.0) ** 2).sum(axis=1)
        + cross
    )
    b = (kt[:, 0:3] ** 2).sum(axis=1) + 6.0 * (kt[:, 9:12] ** 2).sum(axis=1) + cross
    ok = (b > 0) & (w > 1e-8)
    out = np.zeros(kt.shape[0])
    out[ok] = np.sqrt(a[ok] / b[ok])
    return out


def fractional_anisotropy(evals: np.ndarray) -> np.ndarray:
    """FA of eigenvalues ``(..., 3)`` (dipy's formula, 0 where all eigenvalues are 0)."""
    ev1, ev2, ev3 = evals[..., 0], evals[..., 1], evals[..., 2]
    all_zero = (evals == 0).all(axis=-1)
    return np.sqrt(0.5 * ((ev1 - ev2) ** 2 + (ev2 - ev3) ** 2 + (ev3 - ev1) ** 2) / ((evals * evals).sum(-1) + all_zero))

r"""Diffusion kurtosis imaging (DKI): FA, MD, AD, RD, MK, AK, RK, KFA and MKT, vectorised over voxels.

The signal of each voxel is modelled as (Jensen et al. 2005)

.. math::

    \ln S(b, \mathbf{n}) = \ln S_0 - b\, n_i n_j D_{ij}
        + \tfrac{1}{6} b^2 \bar{D}^2\, n_i n_j n_k n_l W_{ijkl},

with the diffusion tensor :math:`D` (6 unique elements, mm^2/s), the kurtosis tensor :math:`W`
(15 unique elements, dimensionless) and the mean diffusivity :math:`\bar D = \mathrm{tr}(D)/3`.
The 22 unknowns are found by linear least squares on the log signal with dipy's design matrix:
ordinary (OLS) or weighted (WLS, the default) with weights equal to the squared signal predicted by
a first OLS fit (Veraart et al. 2013). This module reproduces
``dipy.reconst.dki.DiffusionKurtosisModel(gtab, fit_method="WLS"|"OLS")`` of dipy 1.12.1 step by
step -- signal floor ``min_signal = 1e-4``, eigenvalues clipped at ``1e-6 / -min(B)``, kurtosis
elements divided by the square of the clipped MD -- and computes the analytical scalar maps of its
Cython routines (Tabesh et al. 2011):

- MK: :math:`\sum F_1(\lambda)\hat W_{iiii} + F_2(\lambda)\hat W_{iijj}` with Carlson's elliptic
  integrals :math:`R_F, R_D` (iterated for every voxel until its own convergence criterion, as dipy);
- AK: :math:`\hat W_{1111}\,\bar D^2/\lambda_1^2`; RK: :math:`G_1\hat W_{2222} + G_1\hat W_{3333} +
  G_2\hat W_{2233}`, where :math:`\hat W` is :math:`W` rotated into the eigenvectors of :math:`D`;
- MKT :math:`=\mathrm{tr}(W)/5` (Hansen et al. 2013) and KFA
  :math:`=\|W - \mathrm{MKT}\,I^{(4)}\|_F/\|W\|_F` (Glenn et al. 2015).

MK, AK, RK and MKT are clipped to ``[min_kurtosis, max_kurtosis]`` = ``[-3/7, 10]`` as dipy's
``fit.mk()`` etc.; pass e.g. ``min_kurtosis=0, max_kurtosis=3`` to clip for display instead. Unlike
dipy the whole computation runs on arrays of voxels (numpy, batched normal equations and
eigen-decompositions), in chunks of bounded memory, with progress and cancellation.

References
----------
Jensen JH, Helpern JA et al., "Diffusional kurtosis imaging", Magn Reson Med 53:1432 (2005).
Tabesh A et al., "Estimation of tensors and tensor-derived measures in diffusional kurtosis
imaging", Magn Reson Med 65:823 (2011).
Veraart J et al., "Weighted linear least squares estimation of diffusion MRI parameters:
strengths, limitations, and pitfalls", NeuroImage 81:335 (2013).
Carlson BC, "Numerical computation of real or complex elliptic integrals", Numer Algorithms
10:13 (1995).
Hansen B et al., "Experimentally and computationally fast method for estimation of a mean
kurtosis", Magn Reson Med 69:1754 (2013). Glenn GR et al., NMR Biomed 28:448 (2015).
Henriques RN et al., "Diffusional kurtosis imaging in the diffusion imaging in Python project",
Front Hum Neurosci 15:675433 (2021).
Veraart J et al., "Denoising of diffusion MRI using random matrix theory", NeuroImage 142:394
(2016). Kellner E et al., "Gibbs-ringing artifact removal based on local subvoxel-shifts",
Magn Reson Med 76:1574 (2016).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import ProgressFn, step, subrange

#: dipy's floor on the signal before taking its logarithm (``dipy.reconst.dti.MIN_POSITIVE_SIGNAL``).
MIN_SIGNAL = 1e-4
#: Default kurtosis limits of dipy's ``fit.mk()``, ``fit.ak()``, ``fit.rk()``, ``fit.mkt()``.
MIN_KURTOSIS = -3.0 / 7.0
MAX_KURTOSIS = 10.0
#: Eigenvalues at or below this (mm^2/s) make the analytical kurtosis maps 0 (dipy ``_positive_evals``).
_POSITIVE_EVAL = 2e-7
#: Relative tolerance under which two eigenvalues are treated as equal (dipy's Cython routines).
_EQUAL_EVALS = 2.5e-2

#: (i, j, k, l) of the 15 unique kurtosis tensor elements, in dipy's order.
KT_INDICES = (
    (0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 0, 1), (0, 0, 0, 2),
    (0, 1, 1, 1), (1, 1, 1, 2), (0, 2, 2, 2), (1, 2, 2, 2), (0, 0, 1, 1),
    (0, 0, 2, 2), (1, 1, 2, 2), (0, 0, 1, 2), (0, 1, 1, 2), (0, 1, 2, 2),
)

MAP_UNITS = {
    "fa": "fraction", "md": "mm^2/s", "ad": "mm^2/s", "rd": "mm^2/s",
    "mk": "dimensionless", "ak": "dimensionless", "rk": "dimensionless",
    "kfa": "fraction", "mkt": "dimensionless", "s0": "a.u.", "mask": "boolean",
    "fa_rgb": "fraction", "v1": "unit vector",
}
MAP_DESCRIPTIONS = {
    "fa": "fractional anisotropy of the diffusion tensor (DKI fit)",
    "md": "mean diffusivity (DKI fit)",
    "ad": "axial diffusivity, largest eigenvalue of the diffusion tensor",
    "rd": "radial diffusivity, mean of the two smaller eigenvalues",
    "mk": "mean kurtosis, analytical (Tabesh 2011)",
    "ak": "axial kurtosis along the principal diffusion direction, analytical",
    "rk": "radial kurtosis perpendicular to the principal diffusion direction, analytical",
    "kfa": "kurtosis fractional anisotropy (Glenn 2015)",
    "mkt": "mean of the kurtosis tensor, trace(W)/5 (Hansen 2013)",
    "s0": "signal without diffusion weighting estimated by the fit",
    "mask": "voxels that were fitted",
    "fa_rgb": "direction-encoded colour FA: |principal eigenvector| (R, G, B = x, y, z) times FA",
    "v1": "principal eigenvector of the diffusion tensor (x, y, z components)",
}


# ----------------------------------------------------------------------------------------------
# protocol


def check_protocol(
    bvals: np.ndarray,
    bvecs: np.ndarray,
    n_volumes: int | None = None,
    *,
    b0_threshold: float = 50.0,
    source: str = "bval/bvec",
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a DKI diffusion table and return it as float arrays ``(N,)`` and ``(N, 3)``.

    Parameters
    ----------
    bvals : array-like, shape (N,)
        b-values in s/mm^2 (FSL ``.bval``).
    bvecs : array-like, shape (N, 3) or (3, N)
        Unit gradient directions (FSL ``.bvec``, image voxel axes).
    n_volumes : int, optional
        Number of DWI volumes the table must describe.
    b0_threshold : float
        b-values (s/mm^2) at or below this count as non-diffusion-weighted.
    source : str
        Name used in error messages (file names or ``"bval/bvec"``).

    Raises
    ------
    InputError
        Count or shape mismatch, b-values that look like s/m^2 or ms/um^2, gradient directions that
        are not unit vectors, fewer than two non-zero shells, or fewer than 22 volumes.
    """
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    if bvals.ndim != 1:
        bvals = bvals.ravel()
    if bvecs.ndim != 2 or 3 not in bvecs.shape:
        raise InputError(f"{source}: the b-vectors have shape {bvecs.shape}; expected 3 rows (x, y, z) of directions.")
    if bvecs.shape[1] != 3:
        bvecs = bvecs.T
    if bvecs.shape[0] != bvals.size:
        raise InputError(
            f"{source}: {bvals.size} b-values but {bvecs.shape[0]} gradient directions; "
            "the .bval and .bvec must list the same volumes."
        )
    if n_volumes is not None and bvals.size != n_volumes:
        raise InputError(
            f"{source}: lists {bvals.size} volumes but the DWI has {n_volumes}; use the .bval/.bvec written with this DWI."
        )
    if not (np.isfinite(bvals).all() and np.isfinite(bvecs).all()):
        raise InputError(f"{source}: the diffusion table holds NaN or infinite numbers; fix the .bval/.bvec files.")
    if (bvals < 0).any():
        raise InputError(f"{source}: negative b-values ({bvals.min():g}); b-values must be >= 0 s/mm^2.")
    bmax = float(bvals.max()) if bvals.size else 0.0
    if bmax > 1e5:
        raise InputError(
            f"{source}: the largest b-value is {bmax:.4g}, which looks like s/m^2; "
            "divide the b-values by 1e6 to give them in s/mm^2."
        )
    if 0 < bmax <= 10:
        raise InputError(
            f"{source}: the largest b-value is {bmax:g}, which looks like ms/um^2; "
            "multiply the b-values by 1000 to give them in s/mm^2."
        )
    dw = bvals > b0_threshold
    norms = np.linalg.norm(bvecs[dw], axis=1)
    if norms.size and np.abs(norms - 1).max() > 1e-2:
        worst = norms[np.argmax(np.abs(norms - 1))]
        raise InputError(
            f"{source}: gradient directions of diffusion-weighted volumes must be unit vectors "
            f"(one has length {worst:.3g}); normalise the .bvec columns and keep b in the .bval."
        )
    shells = shell_values(bvals, b0_threshold=b0_threshold)
    if len(shells) < 2:
        found = ", ".join(f"{s:g}" for s in shells) or "none"
        raise InputError(
            f"{source}: DKI needs at least two non-zero b-value shells (e.g. 1000 and 2000 s/mm^2) but found "
            f"{found}; use a multi-shell acquisition."
        )
    if bvals.size < 22:
        raise InputError(
            f"{source}: {bvals.size} volumes, but DKI estimates 22 parameters per voxel; at least 22 volumes are needed."
        )
    return bvals, bvecs


def shell_values(bvals: np.ndarray, *, b0_threshold: float = 50.0, tolerance: float = 100.0) -> list[float]:
    """Non-zero shells (s/mm^2): b-values above ``b0_threshold`` grouped within ``tolerance``."""
    b = np.sort(np.asarray(bvals, dtype=float)[np.asarray(bvals) > b0_threshold])
    shells: list[list[float]] = []
    for value in b:
        if shells and value - shells[-1][0] <= tolerance:
            shells[-1].append(value)
        else:
            shells.append([value])
    return [float(np.round(np.mean(s))) for s in shells]


def design_matrix(bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """dipy's DKI design matrix ``(N, 22)``: 6 DT, 15 KT (times MD^2) columns and ``-1`` for ln S0."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.utils import dki_design_matrix

    gtab = gradient_table(np.asarray(bvals, dtype=float), bvecs=np.asarray(bvecs, dtype=float))
    return dki_design_matrix(gtab)


# ----------------------------------------------------------------------------------------------
# Carlson's elliptic integrals and the functions of Tabesh et al., vectorised


def carlson_rf(x, y, z, *, errtol: float = 3e-4) -> np.ndarray:
    r"""Carlson's symmetric elliptic integral of the first kind, element-wise.

    .. math:: R_F(x, y, z) = \frac{1}{2}\int_0^\infty [(t+x)(t+y)(t+z)]^{-1/2}\,dt

    Duplication steps are taken for each element until its own criterion
    :math:`4^{-n} Q \le |A_n|` holds, exactly as dipy's per-voxel loop (so results agree to rounding),
    but on whole arrays. ``x, y, z >= 0``, at most one zero.
    """
    x, y, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, z)))
    shape = x.shape
    xn, yn, zn = (np.array(v, dtype=float).ravel() for v in (x, y, z))
    an = (xn + yn + zn) / 3.0
    q = (3.0 * errtol) ** (-1 / 6.0) * np.maximum.reduce([np.abs(an - xn), np.abs(an - yn), np.abs(an - zn)])
    n = np.zeros(xn.shape)
    active = np.flatnonzero(q > np.abs(an))
    while active.size:
        xr, yr, zr = np.sqrt(xn[active]), np.sqrt(yn[active]), np.sqrt(zn[active])
        lam = xr * (yr + zr) + yr * zr
        n[active] += 1
        xn[active] = (xn[active] + lam) * 0.25
        yn[active] = (yn[active] + lam) * 0.25
        zn[active] = (zn[active] + lam) * 0.25
        an[active] = (an[active] + lam) * 0.25
        active = active[4.0 ** (-n[active]) * q[active] > np.abs(an[active])]
    big_x = 1.0 - xn / an
    big_y = 1.0 - yn / an
    big_z = -big_x - big_y
    e2 = big_x * big_y - big_z * big_z
    e3 = big_x * big_y * big_z
    rf = an ** (-0.5) * (1.0 - e2 / 10.0 + e3 / 14.0 + (e2 * e2) / 24.0 - 3.0 / 44.0 * e2 * e3)
    return rf.reshape(shape)


def carlson_rd(x, y, z, *, errtol: float = 1e-4) -> np.ndarray:
    r"""Carlson's elliptic integral of the second kind, element-wise (see :func:`carlson_rf`).

    .. math:: R_D(x, y, z) = \frac{3}{2}\int_0^\infty (t+x)^{-1/2}(t+y)^{-1/2}(t+z)^{-3/2}\,dt
    """
    x, y, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, y, z)))
    shape = x.shape
    x0, y0 = x.ravel().astype(float), y.ravel().astype(float)
    xn, yn, zn = x0.copy(), y0.copy(), np.array(z, dtype=float).ravel()
    a0 = (xn + yn + 3.0 * zn) / 5.0
    an = a0.copy()
    q = (errtol / 4.0) ** (-1 / 6.0) * np.maximum.reduce([np.abs(an - xn), np.abs(an - yn), np.abs(an - zn)])
    total = np.zeros(xn.shape)
    n = np.zeros(xn.shape)
    active = np.flatnonzero(q > np.abs(an))
    while active.size:
        xr, yr, zr = np.sqrt(xn[active]), np.sqrt(yn[active]), np.sqrt(zn[active])
        lam = xr * (yr + zr) + yr * zr
        total[active] += 4.0 ** (-n[active]) / (zr * (zn[active] + lam))
        n[active] += 1
        xn[active] = (xn[active] + lam) * 0.25
        yn[active] = (yn[active] + lam) * 0.25
        zn[active] = (zn[active] + lam) * 0.25
        an[active] = (an[active] + lam) * 0.25
        active = active[4.0 ** (-n[active]) * q[active] > np.abs(an[active])]
    p4 = 4.0**n
    big_x = (a0 - x0) / (p4 * an)
    big_y = (a0 - y0) / (p4 * an)
    big_z = -(big_x + big_y) / 3.0
    e2 = big_x * big_y - 6.0 * big_z * big_z
    e3 = (3.0 * big_x * big_y - 8.0 * big_z * big_z) * big_z
    e4 = 3.0 * (big_x * big_y - big_z * big_z) * big_z * big_z
    e5 = big_x * big_y * big_z * big_z * big_z
    rd = (
        4.0 ** (-n) * an ** (-1.5)
        * (1.0 - 3.0 / 14.0 * e2 + 1.0 / 6.0 * e3 + 9.0 / 88.0 * e2 * e2 - 3.0 / 22.0 * e4
           - 9.0 / 52.0 * e2 * e3 + 3.0 / 26.0 * e5)
        + 3.0 * total
    )
    return rd.reshape(shape)


def _positive(a, b, c):
    return (a > _POSITIVE_EVAL) & (b > _POSITIVE_EVAL) & (c > _POSITIVE_EVAL)


def _f2(a, b, c):
    r"""Tabesh's :math:`F_2(\lambda_1, \lambda_2, \lambda_3)` with dipy's singularity handling."""
    out = np.zeros(a.shape)
    pos = _positive(a, b, c)
    bc = np.abs(b - c) < b * _EQUAL_EVALS
    iso = pos & bc & (np.abs(a - b) < b * _EQUAL_EVALS)
    out[iso] = 6.0 / 15.0
    sing = pos & bc & ~iso
    if sing.any():
        l1 = a[sing]
        l3 = (c[sing] + b[sing]) / 2.0
        x = 1.0 - l1 / l3
        alpha = np.empty(x.shape)
        p = x > 0
        sx = np.sqrt(np.abs(x))
        alpha[p] = 1.0 / sx[p] * 0.5 * np.log((1.0 + sx[p]) / (1.0 - sx[p]))
        alpha[~p] = 1.0 / sx[~p] * np.arctan(sx[~p])
        out[sing] = (
            6.0 * (l1 + 2.0 * l3) ** 2 / (144.0 * l3 * l3 * (l1 - l3) * (l1 - l3))
            * (l3 * (l1 + 2.0 * l3) + l1 * (l1 - 4.0 * l3) * alpha)
        )
    gen = pos & ~bc
    if gen.any():
        l1, l2, l3 = a[gen], b[gen], c[gen]
        rf = carlson_rf(l1 / l2, l1 / l3, np.ones_like(l1))
        rd = carlson_rd(l1 / l2, l1 / l3, np.ones_like(l1))
        s23 = np.sqrt(l2 * l3)
        out[gen] = ((l1 + l2 + l3) ** 2 / (3.0 * (l2 - l3) * (l2 - l3))) * (
            ((l2 + l3) / s23) * rf + ((2.0 * l1 - l2 - l3) / (3.0 * s23)) * rd - 2.0
        )
    return out


def _f1(a, b, c):
    r"""Tabesh's :math:`F_1(\lambda_1, \lambda_2, \lambda_3)` with dipy's singularity handling."""
    out = np.zeros(a.shape)
    pos = _positive(a, b, c)
    ab = np.abs(a - b) < a * _EQUAL_EVALS
    ac = np.abs(a - c) < a * _EQUAL_EVALS
    out[pos & ab & ac] = 1.0 / 5.0
    s_ab = pos & ab & ~ac
    if s_ab.any():
        l1 = (a[s_ab] + b[s_ab]) / 2.0
        out[s_ab] = _f2(c[s_ab], l1, l1) / 2.0
    s_ac = pos & ac & ~ab
    if s_ac.any():
        l1 = (a[s_ac] + c[s_ac]) / 2.0
        out[s_ac] = _f2(b[s_ac], l1, l1) / 2.0
    gen = pos & ~ab & ~ac
    if gen.any():
        l1, l2, l3 = a[gen], b[gen], c[gen]
        rf = carlson_rf(l1 / l2, l1 / l3, np.ones_like(l1))
        rd = carlson_rd(l1 / l2, l1 / l3, np.ones_like(l1))
        s23 = np.sqrt(l2 * l3)
        out[gen] = ((l1 + l2 + l3) ** 2 / (18.0 * (l1 - l2) * (l1 - l3))) * (
            (s23 / l1) * rf + ((3.0 * l1 * l1 - l1 * l2 - l1 * l3 - l2 * l3) / (3.0 * l1 * s23)) * rd - 1.0
        )
    return out


def _g1(a, b, c):
    r"""Tabesh's :math:`G_1(\lambda_1, \lambda_2, \lambda_3)` (radial kurtosis)."""
    out = np.zeros(a.shape)
    pos = _positive(a, b, c)
    gen = pos & (np.abs(b - c) >= b * _EQUAL_EVALS)
    l1, l2, l3 = a[gen], b[gen], c[gen]
    out[gen] = (l1 + l2 + l3) ** 2 / (18.0 * l2 * (l2 - l3) * (l2 - l3)) * (
        2.0 * l2 + (l3 * l3 - 3.0 * l2 * l3) / np.sqrt(l2 * l3)
    )
    sing = pos & ~gen
    out[sing] = (a[sing] + 2.0 * b[sing]) ** 2 / (24.0 * b[sing] ** 2)
    return out


def _g2(a, b, c):
    r"""Tabesh's :math:`G_2(\lambda_1, \lambda_2, \lambda_3)` (radial kurtosis)."""
    out = np.zeros(a.shape)
    pos = _positive(a, b, c)
    gen = pos & (np.abs(b - c) >= b * _EQUAL_EVALS)
    l1, l2, l3 = a[gen], b[gen], c[gen]
    out[gen] = (l1 + l2 + l3) ** 2 / (3.0 * (l2 - l3) * (l2 - l3)) * ((l2 + l3) / np.sqrt(l2 * l3) - 2.0)
    sing = pos & ~gen
    out[sing] = (a[sing] + 2.0 * b[sing]) ** 2 / (12.0 * b[sing] ** 2)
    return out


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


# ----------------------------------------------------------------------------------------------
# the fit


def fit_dki_params(
    signal: np.ndarray,
    design: np.ndarray,
    *,
    method: str = "WLS",
    min_signal: float = MIN_SIGNAL,
    design_pinv: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Fit the DKI model to ``n`` voxels at once (dipy's ``ls_fit_dki`` on arrays).

    Parameters
    ----------
    signal : ndarray (n, N)
        DWI signal of each voxel.
    design : ndarray (N, 22)
        :func:`design_matrix`.
    method : {"WLS", "OLS"}
        WLS weights each measurement by its squared OLS-predicted signal.
    min_signal : float
        Floor applied to the signal before the logarithm.

    Returns
    -------
    dict
        ``evals`` (n, 3) mm^2/s sorted descending, ``evecs`` (n, 3, 3) columns, ``kt`` (n, 15),
        ``s0`` (n,).
    """
    a = np.asarray(design, dtype=float)
    pinv = np.linalg.pinv(a) if design_pinv is None else design_pinv
    y = np.log(np.maximum(np.asarray(signal, dtype=float), min_signal))
    beta = y @ pinv.T
    if method == "WLS":
        # Minimise sum_g w_g^2 (y_g - A_g beta)^2 with w = exp(A beta_OLS) through the normal
        # equations on column-scaled A (keeps their condition number moderate), batched over voxels.
        scale = np.linalg.norm(a, axis=0)
        scale[scale == 0] = 1.0
        a_s = a / scale
        w2 = np.exp(2.0 * (beta @ a.T))
        n_par = a.shape[1]
        outer = (a_s[:, :, None] * a_s[:, None, :]).reshape(a.shape[0], n_par * n_par)
        normal = (w2 @ outer).reshape(-1, n_par, n_par)
        rhs = (w2 * y) @ a_s
        try:
            beta = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0] / scale
        except np.linalg.LinAlgError:
            beta = np.einsum("nij,nj->ni", np.linalg.pinv(normal), rhs) / scale
    elif method != "OLS":
        raise InputError(f"method: '{method}' is not a DKI fit method; use 'WLS' or 'OLS'.")
    dt = beta[:, :6]
    tensor = np.empty((beta.shape[0], 3, 3))
    for (i, j), e in zip(((0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)), range(6)):
        tensor[:, i, j] = tensor[:, j, i] = dt[:, e]
    evals, evecs = np.linalg.eigh(tensor)
    order = np.argsort(evals, axis=1)[:, ::-1]
    evals = np.take_along_axis(evals, order, axis=1)
    evecs = np.take_along_axis(evecs, order[:, None, :], axis=2)
    min_diffusivity = 1e-6 / -a.min()
    evals = evals.clip(min=min_diffusivity)
    md_sq = evals.mean(axis=1) ** 2
    kt = np.zeros((beta.shape[0], 15))
    nz = md_sq != 0
    kt[nz] = beta[nz, 6:21] / md_sq[nz, None]
    return {"evals": evals, "evecs": evecs, "kt": kt, "s0": np.exp(-beta[:, 21])}


def fractional_anisotropy(evals: np.ndarray) -> np.ndarray:
    """FA of eigenvalues ``(..., 3)`` (dipy's formula, 0 where all eigenvalues are 0)."""
    ev1, ev2, ev3 = evals[..., 0], evals[..., 1], evals[..., 2]
    all_zero = (evals == 0).all(axis=-1)
    return np.sqrt(0.5 * ((ev1 - ev2) ** 2 + (ev2 - ev3) ** 2 + (ev3 - ev1) ** 2) / ((evals * evals).sum(-1) + all_zero))


def automatic_mask(dwi: np.ndarray, bvals: np.ndarray, *, b0_threshold: float = 50.0) -> np.ndarray:
    """Brain mask from dipy's ``median_otsu`` on the mean b=0 volume (lowest-b volumes if no b=0)."""
    from dipy.segment.mask import median_otsu

    b0 = bvals <= b0_threshold
    if not b0.any():
        b0 = bvals <= bvals.min() + 1
    mean_b0 = np.asarray(dwi[..., b0], dtype=float).mean(axis=-1)
    mean_b0 = np.nan_to_num(mean_b0, nan=0.0, posinf=0.0, neginf=0.0)
    _, mask = median_otsu(mean_b0, median_radius=4, numpass=4)
    return mask.astype(bool)


def preprocess(
    dwi: np.ndarray, *, denoise: bool = False, degibbs: bool = False, mask=None, progress=None, cancel=None
) -> np.ndarray:
    """Optional MP-PCA denoising (dipy ``mppca``, patch radius 2) then Gibbs unringing (``gibbs_removal``)."""
    data = np.asarray(dwi, dtype=float)
    if denoise:
        from dipy.denoise.localpca import mppca

        step(progress, cancel, 0.0, "MP-PCA denoising")
        data = mppca(data, patch_radius=2, suppress_warning=True)
    if degibbs:
        from dipy.denoise.gibbs import gibbs_removal

        step(progress, cancel, 0.5, "removing Gibbs ringing")
        data = gibbs_removal(np.array(data, dtype=float), slice_axis=2, inplace=False,
                             num_processes=os.cpu_count() or 1)
    step(progress, cancel, 1.0, "preprocessing done")
    return data


def fit_dki(
    dwi: np.ndarray,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    method: str = "WLS",
    min_kurtosis: float | None = MIN_KURTOSIS,
    max_kurtosis: float | None = MAX_KURTOSIS,
    denoise: bool = False,
    degibbs: bool = False,
    max_bval: float | None = None,
    b0_threshold: float = 50.0,
    affine: np.ndarray | None = None,
    chunk_size: int = 20000,
    progress: ProgressFn | None = None,
    cancel=None,
) -> Maps:
    """Fit diffusion kurtosis imaging to a 4D DWI and return its scalar maps.

    Parameters
    ----------
    dwi : ndarray (X, Y, Z, N)
        Diffusion-weighted volumes, in the stored voxel order of the file (the b-vectors refer to
        its voxel axes, FSL convention).
    bvals : ndarray (N,)
        b-values in s/mm^2.
    bvecs : ndarray (N, 3) or (3, N)
        Unit gradient directions.
    mask : ndarray (X, Y, Z) of bool, optional
        Voxels to fit; by default an automatic brain mask (dipy ``median_otsu`` on the mean b=0).
    method : {"WLS", "OLS"}
        Weighted (weights from an OLS prediction, dipy's default) or ordinary linear least squares.
    min_kurtosis, max_kurtosis : float or None
        Limits of MK, AK, RK and MKT, by default dipy's ``-3/7`` and ``10``. Use e.g. ``0`` and
        ``3`` to clip for display; ``None`` disables a limit.
    denoise, degibbs : bool
        MP-PCA denoising (Veraart 2016) and Gibbs unringing (Kellner 2016) with dipy, before the fit.
    max_bval : float, optional
        Volumes with b above this (s/mm^2) are left out (DKI is usually fitted on b <= 2500-3000).
    b0_threshold : float
        b-values at or below this count as b=0 (s/mm^2).
    affine : ndarray (4, 4), optional
        Voxel-to-world matrix; when given, the colour FA is coded in world (RAS) axes
        (red = left-right, green = anterior-posterior, blue = inferior-superior), else in voxel axes.
    chunk_size : int
        Voxels per batch; each of the (up to ``os.cpu_count()``) worker threads holds about
        ``chunk_size * (4 * N + 700) * 8`` bytes.
    progress, cancel
        See :mod:`napari_myelin.utils.progress`.

    Returns
    -------
    Maps
        ``fa``, ``md``, ``ad``, ``rd`` (mm^2/s), ``mk``, ``ak``, ``rk``, ``kfa``, ``mkt``, ``s0``,
        ``mask``, ``v1`` (X, Y, Z, 3) principal eigenvector in voxel axes, and ``fa_rgb`` (X, Y, Z, 3)
        direction-encoded colour FA. ``parameters["black_voxel_fraction"]`` is the fraction of fitted
        voxels whose (unclipped) MK is negative -- implausible kurtosis ("black voxels"), typically
        from noise, Gibbs ringing or motion.

    Raises
    ------
    InputError
        Not 4D, diffusion table problems (see :func:`check_protocol`), mask of another shape, or an
        empty mask.
    """
    dwi = np.asarray(dwi)
    if dwi.ndim != 4:
        raise InputError(f"DWI: has {dwi.ndim} dimensions; DKI needs a 4D series (x, y, z, volumes).")
    if str(method).upper() not in ("WLS", "OLS"):
        raise InputError(f"method: '{method}' is not a DKI fit method; use 'WLS' or 'OLS'.")
    method = str(method).upper()
    bvals, bvecs = check_protocol(bvals, bvecs, dwi.shape[-1], b0_threshold=b0_threshold)
    keep = np.ones(bvals.size, dtype=bool)
    if max_bval is not None:
        keep = bvals <= max_bval
        bvals, bvecs = check_protocol(bvals[keep], bvecs[keep], None, b0_threshold=b0_threshold,
                                      source=f"bval/bvec with b <= {max_bval:g}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != dwi.shape[:3]:
            raise InputError(f"mask: its shape {mask.shape} differs from the DWI grid {dwi.shape[:3]}; use a mask on the DWI grid.")
        mask = mask.astype(bool)
    step(progress, cancel, 0.0, "checking the protocol")
    data = dwi[..., keep] if not keep.all() else dwi
    pre_share = 0.3 if denoise else (0.1 if degibbs else 0.0)
    if denoise or degibbs:
        data = preprocess(data, denoise=denoise, degibbs=degibbs, progress=subrange(progress, 0.0, pre_share), cancel=cancel)
    mask_source = "given"
    if mask is None:
        mask = automatic_mask(data, bvals, b0_threshold=b0_threshold)
        mask_source = "automatic (dipy median_otsu on the mean b=0, radius 4, 4 passes)"
    finite = np.isfinite(data).all(axis=-1) if data.dtype.kind == "f" else np.ones(mask.shape, bool)
    n_nonfinite = int((mask & ~finite).sum())
    mask = mask & finite
    n_vox = int(mask.sum())
    if n_vox == 0:
        raise InputError("mask: no voxel to fit (the mask is empty); draw or pass a mask that covers the brain.")

    design = design_matrix(bvals, bvecs)
    design_pinv = np.linalg.pinv(design)
    voxels = np.asarray(data[mask], dtype=float)
    out = {k: np.zeros(n_vox) for k in ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "s0", "mk_unclipped")}
    v1 = np.zeros((n_vox, 3))
    rot = None
    if affine is not None:
        rzs = np.asarray(affine, dtype=float)[:3, :3]
        rot = rzs / np.linalg.norm(rzs, axis=0)
    fit_share = 1.0 - pre_share

    def fit_chunk(start: int, stop: int) -> None:
        p = fit_dki_params(voxels[start:stop], design, method=method, design_pinv=design_pinv)
        ev = p["evals"]
        out["fa"][start:stop] = fractional_anisotropy(ev)
        out["md"][start:stop] = ev.mean(axis=1)
        out["ad"][start:stop] = ev[:, 0]
        out["rd"][start:stop] = ev[:, 1:].mean(axis=1)
        out["s0"][start:stop] = p["s0"]
        kmaps = kurtosis_maps(ev, p["evecs"], p["kt"], min_kurtosis=min_kurtosis, max_kurtosis=max_kurtosis)
        for key, val in kmaps.items():
            out[key][start:stop] = val
        v1[start:stop] = p["evecs"][:, :, 0]

    # numpy's linalg and ufunc loops release the GIL: chunks run on all cores, results land in place
    bounds = [(s, min(s + chunk_size, n_vox)) for s in range(0, n_vox, chunk_size)]
    n_workers = max(1, min(os.cpu_count() or 1, len(bounds), 8))
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        pending = []
        for i, (start, stop) in enumerate(bounds):
            pending.append(pool.submit(fit_chunk, start, stop))
            if len(pending) >= n_workers:
                pending.pop(0).result()
                done = bounds[i - n_workers + 1][1]
                try:
                    step(progress, cancel, pre_share + fit_share * done / n_vox, f"fitted {done} of {n_vox} voxels")
                except BaseException:
                    for f in pending:
                        f.cancel()
                    raise
        for f in pending:
            f.result()
    step(progress, cancel, 1.0, "assembling maps")

    arrays: dict[str, np.ndarray] = {}
    for key in ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "s0"):
        vol = np.zeros(mask.shape)
        vol[mask] = out[key]
        arrays[key] = vol
    arrays["mask"] = mask.copy()
    v1_vol = np.zeros(mask.shape + (3,))
    v1_vol[mask] = v1
    direction = v1 if rot is None else v1 @ rot.T
    rgb = np.zeros(mask.shape + (3,))
    rgb[mask] = np.abs(direction) * np.clip(out["fa"], 0, 1)[:, None]
    arrays["fa_rgb"] = rgb
    arrays["v1"] = v1_vol

    black = float((out["mk_unclipped"] < 0).mean())
    parameters: dict[str, Any] = {
        "method": method,
        "reference": "dipy 1.12.1 DiffusionKurtosisModel(fit_method=%r), analytical mk/ak/rk" % method,
        "min_kurtosis": min_kurtosis,
        "max_kurtosis": max_kurtosis,
        "min_signal": MIN_SIGNAL,
        "b0_threshold_s_per_mm2": b0_threshold,
        "shells_s_per_mm2": shell_values(bvals, b0_threshold=b0_threshold),
        "volumes_used": int(bvals.size),
        "max_bval": max_bval,
        "preprocessing": {
            "mppca_denoising": bool(denoise),
            "gibbs_unringing": bool(degibbs),
            "software": "dipy.denoise.localpca.mppca (patch_radius=2), dipy.denoise.gibbs.gibbs_removal (slice_axis=2)",
        },
        "mask": mask_source,
        "voxels_fitted": n_vox,
        "voxels_with_nonfinite_signal_skipped": n_nonfinite,
        "black_voxel_fraction": black,
        "black_voxel_definition": "fraction of fitted voxels with negative mean kurtosis before clipping",
        "colour_axes": "world RAS (from the affine)" if rot is not None else "voxel axes",
    }
    units = dict(MAP_UNITS)
    if rot is None:
        units["v1"] = "unit vector (voxel axes)"
    return Maps(arrays, units=units, descriptions=dict(MAP_DESCRIPTIONS), method="DKI " + method, parameters=parameters)

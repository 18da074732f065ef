r"""Carlson's elliptic integrals and the functions of Tabesh et al., vectorised over voxels.

:func:`carlson_rf` and :func:`carlson_rd` iterate every element until its own convergence criterion,
as dipy's per-voxel Cython loop (so results agree to rounding); :func:`_f1`, :func:`_f2` (mean
kurtosis) and :func:`_g1`, :func:`_g2` (radial kurtosis) take the diffusion tensor's eigenvalues
(mm^2/s, sorted descending) with dipy's handling of equal eigenvalues.

References
----------
Carlson BC, "Numerical computation of real or complex elliptic integrals", Numer Algorithms
10:13 (1995).
Tabesh A et al., "Estimation of tensors and tensor-derived measures in diffusional kurtosis
imaging", Magn Reson Med 65:823 (2011).
"""

from __future__ import annotations

import numpy as np

#: Eigenvalues at or below this (mm^2/s) make the analytical kurtosis maps 0 (dipy ``_positive_evals``).
_POSITIVE_EVAL = 2e-7
#: Relative tolerance under which two eigenvalues are treated as equal (dipy's Cython routines).
_EQUAL_EVALS = 2.5e-2


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

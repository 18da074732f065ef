"""Quantitative parameter mapping (QPM) from spoiled gradient echo (SPGR) series.

T1 and proton density (PD) from a variable-flip-angle (VFA) SPGR series (DESPOT1), a myelin map
without any magnetisation-transfer pulse, and its calibration to myelin water fraction (MWF).

Forward models
--------------
Single pool (Ernst equation; DESPOT1)::

    S(a) = M0 sin(b a) (1 - E1) / (1 - E1 cos(b a)),      E1 = exp(-TR / T1)

with ``a`` the nominal flip angle and ``b`` the B1 ratio (actual / nominal flip angle).

Two pools with longitudinal exchange (SPGR branch of mcDESPOT; Deoni et al. 2008): a myelin-water
pool ``m`` (fraction ``f_m`` of the water, relaxation ``T1_m``, residence time ``tau_m``) exchanges
with the intra/extra-cellular water pool ``ie`` (``1 - f_m``, ``T1_ie``). The longitudinal Bloch-
McConnell system for ``M = (M_m, M_ie)`` is ``dM/dt = A (M - M_eq)`` with ``M_eq = M0 (f_m, 1 - f_m)``
and::

    A = [[-1/T1_m - k_m,          k_ie      ],
         [      k_m,       -1/T1_ie - k_ie  ]],     k_m = 1/tau_m,  k_ie = f_m k_m / (1 - f_m)

(detailed balance ``f_m k_m = (1 - f_m) k_ie``). With perfect spoiling and both pools flipped by the
same angle, the longitudinal magnetisation just before each pulse is the fixed point of
``M = E (cos(b a) M - M_eq) + M_eq``, ``E = expm(A TR)``, hence::

    M_ss = (I - cos(b a) E)^-1 (I - E) M_eq,        S(a) = sin(b a) (M_ss,m + M_ss,ie)

(the T2* decay to the echo time is absorbed in ``M0``). ``expm`` of the 2 x 2 matrix and the 2 x 2
inverse are taken in closed form, so both models are vectorised over any broadcast voxel shape.
With ``f_m = 0`` the two-pool signal reduces exactly to the Ernst equation with ``T1 = T1_ie``.

Literature pool parameters (defaults of this module): ``T1_m = 0.5 s``, ``T1_ie = 1.05 s``,
``tau_m = 0.12 s`` — mcDESPOT white-matter estimates at 1.5 T (Deoni et al. 2008, Table 2:
T1 of the fast-relaxing pool about 0.4-0.5 s, of the slow pool about 1.0-1.1 s, fast-pool residence
time about 0.1-0.15 s). They are configurable everywhere.

References
----------
Deoni SCL, Rutt BK, Peters TM. Rapid combined T1 and T2 mapping using gradient recalled acquisition
in the steady state. Magn Reson Med 49:515-526 (2003).  (DESPOT1, linearised fit.)
Deoni SCL, Rutt BK, Arun T, Pierpaoli C, Jones DK. Gleaning multicomponent T1 and T2 information from
steady-state imaging data. Magn Reson Med 60:1372-1387 (2008).  (mcDESPOT two-pool model.)
Spencer RGS, Fishbein KW. Measurement of spin-lattice relaxation times and concentrations in systems
with chemical exchange using the one-pulse sequence. J Magn Reson 142:120-135 (2000).
Mezer A, et al. Quantifying the local tissue volume and composition in individual brains with MRI.
Nat Med 19:1667-1672 (2013).  (MTV = 1 - PD with PD normalised to CSF.)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import step, subrange

#: Default pool parameters (s), Deoni et al. 2008 (white matter, see the module docstring).
T1_MYELIN = 0.5
T1_IE = 1.05
TAU_MYELIN = 0.12


def _angles(flip_angles_deg, b1) -> np.ndarray:
    """Effective flip angles (rad), shape ``(..., n_angles)``."""
    a = np.deg2rad(np.atleast_1d(np.asarray(flip_angles_deg, dtype=float)))
    if b1 is None:
        return a
    return np.asarray(b1, dtype=float)[..., None] * a


def spgr_signal(m0, t1, flip_angles_deg, tr, b1=None) -> np.ndarray:
    """Single-pool SPGR steady-state signal (Ernst equation, DESPOT1 model).

    ``S(a) = M0 sin(b a) (1 - E1) / (1 - E1 cos(b a))`` with ``E1 = exp(-TR/T1)``.

    Parameters
    ----------
    m0 : array_like
        Equilibrium magnetisation (any shape; broadcast with ``t1`` and ``b1``).
    t1 : array_like
        Longitudinal relaxation time (s).
    flip_angles_deg : array_like, shape (n,)
        Nominal flip angles (deg).
    tr : float
        Repetition time (s).
    b1 : array_like or None
        Transmit field ratio (actual / nominal flip angle); ``None`` means 1.

    Returns
    -------
    ndarray, shape ``broadcast(m0, t1, b1).shape + (n,)``
        Signal per flip angle, on the last axis.
    """
    m0 = np.asarray(m0, dtype=float)[..., None]
    t1 = np.asarray(t1, dtype=float)[..., None]
    a = _angles(flip_angles_deg, b1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e1 = np.exp(-float(tr) / t1)
    return m0 * np.sin(a) * (1.0 - e1) / (1.0 - e1 * np.cos(a))


def _expm2(a11, a12, a21, a22, t):
    """Closed-form ``expm(A t)`` of a 2 x 2 matrix with real eigenvalues, element-wise over arrays.

    ``expm(A t) = exp(s t) [cosh(q t) I + sinh(q t)/q (A - s I)]`` with ``s = tr(A)/2``,
    ``q = sqrt(s^2 - det A)`` (``sinh(q t)/q -> t`` as ``q -> 0``).
    """
    s = 0.5 * (a11 + a22)
    disc = np.maximum(0.25 * (a11 - a22) ** 2 + a12 * a21, 0.0)
    q = np.sqrt(disc)
    qt = q * t
    ch = np.cosh(qt)
    small = qt < 1e-6
    sh_q = np.where(small, t * (1.0 + qt**2 / 6.0), np.sinh(qt) / np.where(small, 1.0, q))
    es = np.exp(s * t)
    return (
        es * (ch + sh_q * (a11 - s)),
        es * (sh_q * a12),
        es * (sh_q * a21),
        es * (ch + sh_q * (a22 - s)),
    )


def spgr_two_pool_signal(
    m0,
    f_m,
    flip_angles_deg,
    tr,
    *,
    t1_m=T1_MYELIN,
    t1_ie=T1_IE,
    tau_m=TAU_MYELIN,
    b1=None,
) -> np.ndarray:
    """SPGR steady state of two water pools with longitudinal exchange (mcDESPOT SPGR branch).

    ``M_ss = (I - cos(b a) E)^-1 (I - E) M0 (f_m, 1 - f_m)``, ``E = expm(A TR)``, signal
    ``S = sin(b a) (M_ss,m + M_ss,ie)``; ``A`` is the exchange/relaxation matrix of the module
    docstring (Deoni et al. 2008). ``f_m = 0`` gives the Ernst equation with ``T1 = T1_ie``.

    Parameters
    ----------
    m0 : array_like
        Total equilibrium magnetisation of both pools.
    f_m : array_like
        Myelin-water fraction (0 <= f_m < 1; values are clipped to [0, 0.999]).
    flip_angles_deg : array_like, shape (n,)
        Nominal flip angles (deg).
    tr : float
        Repetition time (s).
    t1_m, t1_ie : array_like
        T1 of the myelin-water and intra/extra-cellular pools (s); defaults 0.5 and 1.05 s.
    tau_m : array_like
        Residence time of water in the myelin pool (s); default 0.12 s (``k_m = 1/tau_m``).
        ``np.inf`` switches exchange off.
    b1 : array_like or None
        Transmit field ratio; ``None`` means 1.

    Returns
    -------
    ndarray, shape ``broadcast(m0, f_m, t1_m, t1_ie, tau_m, b1).shape + (n,)``
    """
    f = np.clip(np.asarray(f_m, dtype=float), 0.0, 0.999)
    return _two_pool(m0, f, flip_angles_deg, tr, t1_m, t1_ie, tau_m, b1)


def _two_pool(m0, f, flip_angles_deg, tr, t1_m, t1_ie, tau_m, b1):
    """:func:`spgr_two_pool_signal` without clipping ``f`` (the fit evaluates slightly negative f)."""
    m0 = np.asarray(m0, dtype=float)[..., None]
    f = np.asarray(f, dtype=float)[..., None]
    r1m = 1.0 / np.asarray(t1_m, dtype=float)[..., None]
    r1i = 1.0 / np.asarray(t1_ie, dtype=float)[..., None]
    km = 1.0 / np.asarray(tau_m, dtype=float)[..., None]
    kie = f * km / (1.0 - f)
    e11, e12, e21, e22 = _expm2(-r1m - km, kie, km, -r1i - kie, float(tr))
    a = _angles(flip_angles_deg, b1)
    c = np.cos(a)
    # rhs = (I - E) M_eq
    mm, mi = m0 * f, m0 * (1.0 - f)
    b_m = (1.0 - e11) * mm - e12 * mi
    b_i = -e21 * mm + (1.0 - e22) * mi
    # solve (I - c E) x = rhs in closed form
    g11, g12, g21, g22 = 1.0 - c * e11, -c * e12, -c * e21, 1.0 - c * e22
    det = g11 * g22 - g12 * g21
    x_m = (g22 * b_m - g12 * b_i) / det
    x_i = (-g21 * b_m + g11 * b_i) / det
    return np.sin(a) * (x_m + x_i)


# --------------------------------------------------------------------------- input checks
def check_protocol(flip_angles_deg, tr, n_volumes: int | None = None, *, source: str = "SPGR series") -> tuple[np.ndarray, float]:
    """Validate flip angles (deg) and TR (s) against the number of volumes of the series.

    Raises
    ------
    InputError
        Fewer than 2 (distinct) flip angles, a count that differs from the number of volumes, an angle
        outside (0, 90] deg, or a missing / non-positive TR.
    """
    if flip_angles_deg is None:
        raise InputError(f"{source}: no flip angles were given; add FlipAngle (deg) to the JSON sidecar or pass --flip-angles.")
    fa = np.atleast_1d(np.asarray(flip_angles_deg, dtype=float)).ravel()
    if fa.size < 2 or np.unique(fa).size < 2:
        raise InputError(
            f"{source}: {np.unique(fa).size} distinct flip angle(s) given; T1 mapping needs at least 2 different "
            "flip angles (e.g. 3 and 20 deg)."
        )
    if n_volumes is not None and fa.size != n_volumes:
        raise InputError(
            f"{source}: has {n_volumes} volumes but {fa.size} flip angles were given; give one flip angle per volume."
        )
    if not np.all(np.isfinite(fa)) or np.any(fa <= 0) or np.any(fa > 90):
        raise InputError(f"{source}: flip angles {fa.tolist()} are not all within (0, 90] deg; give them in degrees.")
    if tr is None:
        raise InputError(f"{source}: the repetition time is missing; add RepetitionTime (s) to the JSON sidecar or pass --tr.")
    tr = float(np.atleast_1d(np.asarray(tr, dtype=float))[0])
    if not np.isfinite(tr) or tr <= 0:
        raise InputError(f"{source}: repetition time {tr} is not positive; give TR in seconds (e.g. 0.015).")
    if tr > 1.0:
        raise InputError(f"{source}: repetition time {tr} s is implausible for SPGR; give TR in seconds, not ms (e.g. 0.015).")
    return fa, tr


def _check_signals(signals, n_angles: int) -> np.ndarray:
    sig = np.asarray(signals, dtype=float)
    if sig.ndim < 2:
        raise InputError("SPGR series: expected one volume per flip angle on the last axis.")
    if sig.shape[-1] != n_angles:
        raise InputError(
            f"SPGR series: has {sig.shape[-1]} volumes but {n_angles} flip angles were given; "
            "give one flip angle per volume."
        )
    return sig


def _check_b1(b1, spatial_shape) -> np.ndarray | None:
    if b1 is None:
        return None
    b1 = np.asarray(b1, dtype=float)
    if b1.shape != tuple(spatial_shape):
        raise InputError(
            f"B1 map: shape {b1.shape} differs from the SPGR grid {tuple(spatial_shape)}; resample it to the SPGR "
            "grid (the CLI and widget do this by world coordinates)."
        )
    b1 = np.where(np.isfinite(b1) & (b1 > 0), b1, 1.0)
    med = float(np.median(b1))
    if med > 10:  # stored in percent of the nominal flip angle
        warnings.warn("B1 map: values look like percent (median %.0f); dividing by 100." % med, stacklevel=3)
        b1 = b1 / 100.0
    return b1


def _default_mask(sig: np.ndarray) -> np.ndarray:
    finite = np.all(np.isfinite(sig), axis=-1) & np.all(sig > 0, axis=-1)
    mean = np.where(finite, sig.mean(axis=-1), 0.0)
    if not finite.any():
        return finite
    thr = 0.1 * np.percentile(mean[finite], 99)
    return finite & (mean > thr)


def _mask_of(mask, sig: np.ndarray) -> np.ndarray:
    if mask is None:
        return _default_mask(sig)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != sig.shape[:-1]:
        raise InputError(f"mask: shape {mask.shape} differs from the image grid {sig.shape[:-1]}; use a mask on the same grid.")
    return mask & np.all(np.isfinite(sig), axis=-1)


# --------------------------------------------------------------------------- T1 / PD (DESPOT1)
def _despot1_linear(s, sa, ta):
    """Linear DESPOT1: ``S/sin a = E1 S/tan a + M0 (1 - E1)``, least squares per voxel."""
    y = s / sa
    x = s / ta
    mx, my = x.mean(-1), y.mean(-1)
    sxx = ((x - mx[..., None]) ** 2).sum(-1)
    sxy = ((x - mx[..., None]) * (y - my[..., None])).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = sxy / sxx
        m0 = (my - e1 * mx) / (1.0 - e1)
    return m0, e1


def _despot1_lm(s, sa, ca, m0, e1, e1_lo, e1_hi, n_iter):
    """Levenberg-Marquardt on (M0, E1) of the Ernst model, batched over voxels (closed-form 2x2 solves)."""
    lam = np.full(m0.shape, 1e-3)

    def resid(m0_, e1_):
        d = 1.0 - e1_[:, None] * ca
        return s - m0_[:, None] * sa * (1.0 - e1_[:, None]) / d, d

    r, d = resid(m0, e1)
    cost = (r**2).sum(-1)
    for _ in range(n_iter):
        j0 = sa * (1.0 - e1[:, None]) / d
        j1 = m0[:, None] * sa * (ca - 1.0) / d**2
        h00, h01, h11 = (j0 * j0).sum(-1), (j0 * j1).sum(-1), (j1 * j1).sum(-1)
        g0, g1 = (j0 * r).sum(-1), (j1 * r).sum(-1)
        a00, a11 = h00 * (1 + lam), h11 * (1 + lam)
        det = a00 * a11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            d0 = (a11 * g0 - h01 * g1) / det
            d1 = (a00 * g1 - h01 * g0) / det
        ok_step = np.isfinite(d0) & np.isfinite(d1)
        m0_new = np.where(ok_step, np.maximum(m0 + d0, 0.0), m0)
        e1_new = np.where(ok_step, np.clip(e1 + d1, e1_lo, e1_hi), e1)
        r_new, d_new = resid(m0_new, e1_new)
        cost_new = (r_new**2).sum(-1)
        better = cost_new <= cost
        m0 = np.where(better, m0_new, m0)
        e1 = np.where(better, e1_new, e1)
        r = np.where(better[:, None], r_new, r)
        d = np.where(better[:, None], d_new, d)
        cost = np.where(better, cost_new, cost)
        lam = np.where(better, lam / 10.0, lam * 10.0).clip(1e-12, 1e12)
    return m0, e1


def fit_vfa(
    signals,
    flip_angles_deg,
    tr,
    *,
    b1=None,
    mask=None,
    csf_mask=None,
    csf_t1_threshold: float = 3.0,
    t1_range: tuple[float, float] = (0.01, 10.0),
    nonlinear: bool = True,
    n_iter: int = 30,
    chunk_size: int = 200_000,
    progress=None,
    cancel=None,
) -> Maps:
    """T1, M0, PD and MTV from a variable-flip-angle SPGR series (DESPOT1), batched over voxels.

    Model (Ernst equation, b = B1 ratio)::

        S(a) = M0 sin(b a) (1 - E1) / (1 - E1 cos(b a)),     E1 = exp(-TR/T1)

    1. Linear DESPOT1 (Deoni et al. 2003): ``S/sin(ba) = E1 S/tan(ba) + M0 (1 - E1)``, a straight line
       per voxel; slope ``E1`` and intercept give ``T1 = -TR / ln E1`` and ``M0``. Exact for
       noise-free data from 2 or more angles.
    2. Nonlinear refinement (``nonlinear=True``): Levenberg-Marquardt on the Ernst equation itself
       (least squares on the signals, i.e. the maximum-likelihood fit for Gaussian noise, which the
       linearisation is not: it weights low-angle points by ``1/sin^2 a``), with closed-form 2 x 2
       normal equations per voxel, started from the linear fit, ``T1`` bounded to ``t1_range``.
    3. Proton density normalised to CSF: ``PD = M0 / M0_csf`` with ``M0_csf`` the median M0 over the
       reference region — ``csf_mask`` when given, else the fitted voxels with
       ``T1 > csf_t1_threshold`` (CSF T1 is about 4 s at 3 T, tissue below 2 s) that are not on the
       edge of the mask (mask eroded by one voxel: edge voxels share their volume with skull or air,
       which lowers M0 but not T1). When fewer than 10 such voxels exist (e.g. a
       crop without ventricles), the 99.5th percentile of M0 in the mask is used and a warning is
       issued. ``M0`` also holds the receive-coil profile, which is not corrected here.
    4. Macromolecular tissue volume ``MTV = 1 - PD`` (Mezer et al. 2013).

    Parameters
    ----------
    signals : array_like, shape (..., n)
        SPGR magnitudes, one volume per flip angle on the last axis.
    flip_angles_deg : array_like, shape (n,)
        Nominal flip angles (deg), at least 2 distinct.
    tr : float
        Repetition time (s).
    b1 : array_like or None, shape (...)
        Transmit B1 ratio on the same grid (1 = nominal). Without it, B1 errors bias T1 by about
        ``1/b^2`` (T1 scales with the square of the flip-angle error to first order).
    mask : array_like of bool or None
        Voxels to fit; default: every voxel whose signals are finite and positive and whose mean is
        above 10% of the 99th percentile of the mean signal.
    csf_mask : array_like of bool or None
        Reference region for the PD normalisation (see 3.).
    csf_t1_threshold : float
        T1 (s) above which a fitted voxel counts as CSF when ``csf_mask`` is not given.
    t1_range : (float, float)
        Bounds of T1 (s).
    nonlinear : bool
        Refine the linear fit by Levenberg-Marquardt.
    n_iter : int
        Levenberg-Marquardt iterations.
    chunk_size : int
        Voxels per batch (bounds memory).
    progress, cancel
        See :mod:`napari_myelin.utils.progress`.

    Returns
    -------
    Maps
        ``t1`` (s), ``m0`` (a.u.), ``pd`` (fraction of CSF), ``mtv`` (fraction); 0 outside the mask.
        ``parameters`` holds ``m0_csf`` and the reference region used.
    """
    fa, tr = check_protocol(flip_angles_deg, tr)
    sig = _check_signals(signals, fa.size)
    spatial = sig.shape[:-1]
    b1 = _check_b1(b1, spatial)
    m = _mask_of(mask, sig)
    idx = np.flatnonzero(m)
    flat = sig.reshape(-1, fa.size)
    b1_flat = None if b1 is None else b1.reshape(-1)
    t1 = np.zeros(m.size)
    m0 = np.zeros(m.size)
    e1_lo, e1_hi = np.exp(-tr / t1_range[0]), np.exp(-tr / t1_range[1])
    a_nom = np.deg2rad(fa)
    n_chunks = max(1, int(np.ceil(idx.size / chunk_size)))
    step(progress, cancel, 0.0, "fitting T1 (DESPOT1)")
    for c in range(n_chunks):
        sel = idx[c * chunk_size:(c + 1) * chunk_size]
        s = flat[sel]
        a = a_nom[None, :] if b1_flat is None else b1_flat[sel, None] * a_nom[None, :]
        a = np.broadcast_to(a, s.shape)
        sa, ca, ta = np.sin(a), np.cos(a), np.tan(a)
        m0c, e1c = _despot1_linear(s, sa, ta)
        bad = ~(np.isfinite(e1c) & np.isfinite(m0c))
        e1c = np.where(bad, np.exp(-tr / 1.0), e1c).clip(e1_lo, e1_hi)
        d = 1.0 - e1c[:, None] * ca
        g = sa * (1 - e1c[:, None]) / d
        # M0 consistent with the clipped E1 (least squares), exact when E1 was not clipped
        m0c = np.where(bad | (m0c <= 0) | ~np.isfinite(m0c), (s * g).sum(-1) / (g * g).sum(-1), m0c)
        if nonlinear:
            m0c, e1c = _despot1_lm(s, sa, ca, m0c, e1c, e1_lo, e1_hi, n_iter)
        t1[sel] = -tr / np.log(e1c)
        m0[sel] = m0c
        step(progress, cancel, (c + 1) / n_chunks * 0.95, f"fitting T1 (DESPOT1): {min((c + 1) * chunk_size, idx.size)}/{idx.size} voxels")
    t1 = t1.reshape(spatial)
    m0 = m0.reshape(spatial)
    if csf_mask is not None:
        csf = np.asarray(csf_mask).astype(bool)
        if csf.shape != spatial:
            raise InputError(f"CSF mask: shape {csf.shape} differs from the image grid {spatial}; use a mask on the SPGR grid.")
        ref = csf & m
        reference = "csf_mask"
    else:
        from scipy.ndimage import binary_erosion

        long_t1 = m & (t1 > csf_t1_threshold) & (t1 < 0.999 * t1_range[1])
        ref = long_t1 & binary_erosion(m, iterations=1) if m.ndim == 3 else long_t1
        reference = f"voxels with T1 > {csf_t1_threshold} s inside the mask eroded by 1 voxel"
        if ref.sum() < 10:
            ref = long_t1
            reference = f"voxels with T1 > {csf_t1_threshold} s"
    if ref.sum() >= 10:
        m0_csf = float(np.median(m0[ref]))
    else:
        if csf_mask is not None:
            raise InputError("CSF mask: fewer than 10 of its voxels were fitted; give a CSF mask inside the SPGR brain.")
        m0_csf = float(np.percentile(m0[m], 99.5)) if m.any() else 1.0
        reference = "99.5th percentile of M0 (no CSF found)"
        warnings.warn(
            f"PD normalisation: fewer than 10 voxels with T1 > {csf_t1_threshold} s; PD is normalised to the 99.5th "
            "percentile of M0 instead of CSF (give a CSF mask for a calibrated PD).",
            stacklevel=2,
        )
    if not np.isfinite(m0_csf) or m0_csf <= 0:
        m0_csf = 1.0
    pd = np.where(m, m0 / m0_csf, 0.0)
    mtv = np.where(m, 1.0 - pd, 0.0)
    step(progress, cancel, 1.0, "T1 and PD done")
    return Maps(
        {"t1": t1, "m0": m0, "pd": pd, "mtv": mtv},
        units={"t1": "s", "m0": "a.u.", "pd": "fraction", "mtv": "fraction"},
        descriptions={
            "t1": "longitudinal relaxation time T1 (DESPOT1 variable flip angle%s)" % (", B1 corrected" if b1 is not None else ""),
            "m0": "equilibrium magnetisation M0 (includes the receive profile)",
            "pd": "proton density normalised to CSF (PD_csf = 1)",
            "mtv": "macromolecular tissue volume, 1 - PD",
        },
        method="DESPOT1" + (" + Levenberg-Marquardt" if nonlinear else " (linear)"),
        parameters={
            "flip_angles_deg": fa.tolist(),
            "tr_s": tr,
            "b1_corrected": b1 is not None,
            "m0_csf": m0_csf,
            "pd_reference": reference,
            "n_reference_voxels": int(ref.sum()),
        },
    )


# --------------------------------------------------------------------------- myelin maps
#: Defaults of the ``r1-pd`` model (see :func:`myelin_map`).
T1_FREE_WATER = 4.0  # s, CSF at 3 T (about 4 - 4.4 s; Lu et al. 2005)
PD_TISSUE = 0.7  # water content of white matter relative to CSF (0.69-0.71; Neeb et al. 2006)


def _free_water_fraction(pd, pd_tissue):
    """Fraction of the voxel's water that is free water: ``phi = W_fw / PD``, ``W_fw = clip((PD - p_t)/(1 - p_t), 0, PD)``."""
    pd = np.asarray(pd, dtype=float)
    w_fw = np.clip((pd - pd_tissue) / (1.0 - pd_tissue), 0.0, np.maximum(pd, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pd > 0, w_fw / pd, 0.0)


def _two_pool_grid_fit(s, b1, fa, tr, f_grid, pars, phi=None):
    """Variable projection over a grid of f_m: for each f, M0 = <S,g>/<g,g>; residual |S|^2 - <S,g>^2/<g,g>.

    ``g = (1 - phi) g_2pool(f) + phi g_fw`` with ``g_fw`` the unit-M0 Ernst signal of free water.
    """
    bb = np.ones((s.shape[0], 1)) if b1 is None else b1[:, None]
    g = _two_pool(1.0, f_grid, fa, tr, pars["t1_m"], pars["t1_ie"], pars["tau_m"], bb)  # (N, F, n)
    if phi is not None:
        h = spgr_signal(1.0, pars["t1_fw"], fa, tr, b1=bb[:, 0])  # (N, n)
        g = (1.0 - phi)[:, None, None] * g + phi[:, None, None] * h[:, None, :]
    sg = np.einsum("vfn,vn->vf", g, s)
    gg = np.einsum("vfn,vfn->vf", g, g)
    cost = (s * s).sum(-1)[:, None] - sg**2 / gg
    return cost, sg / gg


def _fit_two_pool(s, b1, fa, tr, f_max, pars, phi=None, n_coarse=81, n_fine=41):
    """Coarse grid over [0, f_max], fine grid around the best node, parabolic vertex, two Newton polishes."""
    f_coarse = np.linspace(0.0, f_max, n_coarse)
    h = f_coarse[1] - f_coarse[0]
    cost, _ = _two_pool_grid_fit(s, b1, fa, tr, f_coarse[None, :], pars, phi)
    best = f_coarse[np.argmin(cost, axis=1)]
    fine = best[:, None] + np.linspace(-h, h, n_fine)[None, :]
    fine = np.clip(fine, -h, f_max + h)
    cost, _ = _two_pool_grid_fit(s, b1, fa, tr, fine, pars, phi)
    k = np.argmin(cost, axis=1)
    kk = np.clip(k, 1, n_fine - 2)
    rows = np.arange(s.shape[0])
    c0, c1, c2 = cost[rows, kk - 1], cost[rows, kk], cost[rows, kk + 1]
    hf = 2 * h / (n_fine - 1)
    denom = c0 - 2 * c1 + c2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(denom > 0, 0.5 * (c0 - c2) / denom, 0.0)
    interior = (k == kk)
    f = np.where(interior, fine[rows, kk] + np.clip(shift, -1, 1) * hf, fine[rows, k])
    # two Newton steps on the projected residual with central differences (polishes the vertex)
    for delta in (1e-4, 1e-5):
        trio = f[:, None] + np.array([-delta, 0.0, delta])[None, :]
        cost, _ = _two_pool_grid_fit(s, b1, fa, tr, trio, pars, phi)
        c0, c1, c2 = cost[:, 0], cost[:, 1], cost[:, 2]
        curv = c0 - 2 * c1 + c2
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curv > 0, 0.5 * (c0 - c2) / curv, 0.0)
        f = f + np.clip(np.nan_to_num(shift), -3, 3) * delta
    return np.clip(f, 0.0, f_max)


def _r1_pd_model(t1, phi, t1_m, t1_ie, t1_fw):
    """Tissue myelin-water fraction from R1 after removing the free-water share (see myelin_map)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.where(t1 > 0, 1.0 / t1, 0.0)
        r1_tissue = (r1 - phi / t1_fw) / (1.0 - phi)
        f = (r1_tissue - 1.0 / t1_ie) / (1.0 / t1_m - 1.0 / t1_ie)
    return np.where((phi < 0.999) & np.isfinite(f), f, 0.0)  # pure free water has no tissue


def myelin_map(
    signals=None,
    flip_angles_deg=None,
    tr=None,
    *,
    method: str = "two-pool",
    t1=None,
    pd=None,
    b1=None,
    mask=None,
    t1_m: float = T1_MYELIN,
    t1_ie: float = T1_IE,
    tau_m: float = TAU_MYELIN,
    t1_fw: float = T1_FREE_WATER,
    pd_tissue: float | None = PD_TISSUE,
    f_max: float = 0.4,
    calibration=None,
    chunk_size: int = 20_000,
    progress=None,
    cancel=None,
) -> Maps:
    """QPM myelin map (myelin-water fraction of the voxel's water, 0-1) without an MT pulse.

    Free water from PD (both methods, when ``pd`` is given and ``pd_tissue`` is not ``None``)
        Brain tissue holds less water than CSF (white matter about 0.7 of CSF's; Neeb et al. 2006).
        Water in excess of ``pd_tissue`` is counted as free (CSF-like) water, and its share of the
        voxel's water is::

            W_fw = clip((PD - p_t) / (1 - p_t), 0, PD),       phi = W_fw / PD

        The myelin map is then the myelin water over *all* the water, ``f (1 - phi)``, where ``f``
        is the myelin-water fraction of the tissue water. This removes the CSF partial volume that
        otherwise lengthens T1 and reads as missing myelin, and, because DESPOT1 errors of ``M0``
        and ``T1`` are correlated, cancels part of the noise. Without ``pd``: ``phi = 0``.
    ``method="two-pool"`` (from the SPGR series, >= 3 flip angles)
        The SPGR branch of the mcDESPOT two-pool model with longitudinal exchange
        (:func:`spgr_two_pool_signal`, Deoni et al. 2008), plus the non-exchanging free-water pool
        of Deoni et al. 2013 with its fraction ``phi`` fixed from PD::

            S(a) = M0 [(1 - phi) S_2pool(a; f, T1_m, T1_ie, tau_m) + phi S_ernst(a; T1_fw)]

        Pool T1s ``t1_m``, ``t1_ie``, ``t1_fw`` and the myelin residence time ``tau_m`` are fixed
        (literature values, configurable); per voxel the unknowns are ``M0`` and ``f``. ``S`` is
        linear in ``M0``, which is projected out (variable projection): for each ``f`` the best
        ``M0 = <S, g_f> / <g_f, g_f>`` with ``g_f`` the unit-M0 signal, and the residual is
        ``|S|^2 - <S, g_f>^2 / <g_f, g_f>``. It is scanned on 81 values over ``[0, f_max]``, then 41
        values around the best node; the minimum is refined by the vertex of a parabola and two
        Newton steps with central differences (noise-free data are recovered to 1e-6), all batched
        over voxels with a per-voxel B1 when given. Partial saturation at high flip angles is what
        reveals the short-T1 myelin water: the map is as good as the fixed pool parameters.
    ``method="r1-pd"`` (from T1 and PD maps, e.g. a scanner's own QPM / synthetic-MRI product)
        Fast exchange mixes the relaxation rates by water fraction (Warntjes et al. 2016)::

            R1 = phi R1_fw + (1 - phi) [f R1_m + (1 - f) R1_ie]
            f  = ((R1 - phi R1_fw) / (1 - phi) - R1_ie) / (R1_m - R1_ie)

        with ``R1 = 1/T1`` and ``phi`` from PD as above; the map is ``f (1 - phi)`` clipped to
        [0, 1].

    Parameters
    ----------
    signals : array_like, shape (..., n), optional
        SPGR series (``two-pool``).
    flip_angles_deg, tr
        Protocol (deg, s) of ``signals``.
    method : {"two-pool", "r1-pd"}
    t1 : array_like, optional
        T1 map (s) (``r1-pd``).
    pd : array_like, optional
        PD map normalised to CSF (required by ``r1-pd``; optional for ``two-pool``, where it sets the
        free-water fraction).
    b1 : array_like, optional
        B1 ratio on the grid (``two-pool``).
    mask : array_like of bool, optional
        Voxels to compute (default: see :func:`fit_vfa` for ``two-pool``, ``T1 > 0`` for ``r1-pd``).
    t1_m, t1_ie, tau_m : float
        Pool T1s and myelin-water residence time (s). Defaults 0.5, 1.05, 0.12 s (Deoni et al. 2008).
    t1_fw : float
        T1 of free water (s), default 4.0 s (CSF at 3 T, Lu et al. 2005).
    pd_tissue : float or None
        Water content of tissue relative to CSF above which water counts as free (default 0.7,
        white matter); ``None`` switches the free-water pool off.
    f_max : float
        Upper bound of ``f`` in the two-pool fit.
    calibration : MwfCalibration, dict, path or None
        When given, the MWF-calibrated map ``mwf_qpm`` (%) is added (see :func:`fit_mwf_calibration`).

    Returns
    -------
    Maps
        ``qpm_myelin`` (fraction), ``free_water`` (``phi``, fraction; when PD was used) and, with a
        calibration, ``mwf_qpm`` (%).

    References
    ----------
    Deoni SCL et al., Magn Reson Med 60:1372-1387 (2008).
    Deoni SCL, Matthews L, Kolind SH. One component? Two components? Three? The effect of including a
    nonexchanging "free" water component in multicomponent driven equilibrium single pulse observation
    of T1 and T2. Magn Reson Med 70:147-154 (2013).
    Warntjes M et al., Modeling the presence of myelin and edema in the brain based on multi-parameter
    quantitative MRI. Front Neurol 7:16 (2016).
    Neeb H, Zilles K, Shah NJ. A new method for fast quantitative mapping of absolute water content in
    vivo. NeuroImage 31:1156-1168 (2006).
    Lu H et al., Routine clinical brain MRI sequences for use at 3.0 Tesla. J Magn Reson Imaging
    22:13-22 (2005).
    """
    if method not in ("two-pool", "r1-pd"):
        raise InputError(f"method: '{method}' is not known; use 'two-pool' or 'r1-pd'.")
    if pd_tissue is not None and not 0 < pd_tissue < 1:
        raise InputError(f"pd_tissue: {pd_tissue} is not between 0 and 1; give the tissue water content relative to CSF (e.g. 0.7).")
    params: dict[str, Any] = {"method": method, "t1_m_s": t1_m, "t1_ie_s": t1_ie}
    pda = None if pd is None else np.asarray(pd, dtype=float)
    use_fw = pda is not None and pd_tissue is not None
    if method == "two-pool":
        if signals is None:
            raise InputError("two-pool myelin map: the SPGR series is missing; give the series or use method 'r1-pd' with T1 and PD maps.")
        fa, tr = check_protocol(flip_angles_deg, tr)
        if np.unique(fa).size < 3:
            raise InputError(
                f"two-pool myelin map: {np.unique(fa).size} distinct flip angles given; the two-pool fit needs at least 3 "
                "(e.g. 3, 10 and 20 deg); use method 'r1-pd' with 2 angles."
            )
        sig = _check_signals(signals, fa.size)
        spatial = sig.shape[:-1]
        b1 = _check_b1(b1, spatial)
        if pda is not None and pda.shape != spatial:
            raise InputError(f"PD map: shape {pda.shape} differs from the SPGR grid {spatial}; use the PD from this series.")
        m = _mask_of(mask, sig)
        phi_all = _free_water_fraction(np.where(m, pda, 0.0), pd_tissue).reshape(-1) if use_fw else None
        idx = np.flatnonzero(m)
        flat = sig.reshape(-1, fa.size)
        b1f = None if b1 is None else b1.reshape(-1)
        pars = {"t1_m": t1_m, "t1_ie": t1_ie, "tau_m": tau_m, "t1_fw": t1_fw}
        f_all = np.zeros(m.size)
        n_chunks = max(1, int(np.ceil(idx.size / chunk_size)))
        step(progress, cancel, 0.0, "two-pool myelin fit")
        for c in range(n_chunks):
            sel = idx[c * chunk_size:(c + 1) * chunk_size]
            f_all[sel] = _fit_two_pool(flat[sel], None if b1f is None else b1f[sel], fa, tr, f_max, pars,
                                       None if phi_all is None else phi_all[sel])
            step(progress, cancel, (c + 1) / n_chunks, f"two-pool myelin fit: {min((c + 1) * chunk_size, idx.size)}/{idx.size} voxels")
        f = f_all.reshape(spatial)
        phi = None if phi_all is None else phi_all.reshape(spatial)
        params.update(flip_angles_deg=fa.tolist(), tr_s=tr, tau_m_s=tau_m, f_max=f_max, b1_corrected=b1 is not None)
        desc = "QPM myelin-water fraction, two-pool SPGR model with exchange (mcDESPOT SPGR branch)"
    else:
        if t1 is None or pda is None:
            raise InputError("r1-pd myelin map: T1 and PD maps are both needed; give --t1 and --pd (or fit them from SPGR).")
        t1a = np.asarray(t1, dtype=float)
        if t1a.shape != pda.shape:
            raise InputError(f"r1-pd myelin map: T1 grid {t1a.shape} differs from PD grid {pda.shape}; give maps on one grid.")
        positive = t1a[np.isfinite(t1a) & (t1a > 0)]
        if positive.size and np.median(positive) > 50:
            raise InputError("T1 map: values look like milliseconds (median > 50); give T1 in seconds.")
        m = (t1a > 0) & np.isfinite(t1a) & np.isfinite(pda) & (pda > 0)
        if mask is not None:
            mk = np.asarray(mask).astype(bool)
            if mk.shape != t1a.shape:
                raise InputError(f"mask: shape {mk.shape} differs from the T1 grid {t1a.shape}; use a mask on the same grid.")
            m &= mk
        step(progress, cancel, 0.0, "r1-pd myelin map")
        phi = _free_water_fraction(np.where(m, pda, 0.0), pd_tissue) if use_fw else np.zeros(t1a.shape)
        f = _r1_pd_model(np.where(m, t1a, 1.0), np.where(m, phi, 0.0), t1_m, t1_ie, t1_fw)
        if not use_fw:
            phi = None
        desc = "QPM myelin-water fraction, fast-exchange R1 mixing with free water from PD"
        step(progress, cancel, 1.0, "r1-pd myelin map done")
    if use_fw:
        params.update(t1_fw_s=t1_fw, pd_tissue=pd_tissue)
    total = f if phi is None else f * (1.0 - phi)
    qmap = np.where(m, np.clip(total, 0.0, 1.0), 0.0)
    arrays = {"qpm_myelin": qmap}
    units = {"qpm_myelin": "fraction"}
    descs = {"qpm_myelin": desc + (", free water from PD" if use_fw else "")}
    if phi is not None:
        arrays["free_water"] = np.where(m, phi, 0.0)
        units["free_water"] = "fraction"
        descs["free_water"] = f"free-water share of the voxel's water, (PD - {pd_tissue})/(1 - {pd_tissue}) / PD"
    if calibration is not None:
        cal = MwfCalibration.load(calibration) if not isinstance(calibration, MwfCalibration) else calibration
        arrays["mwf_qpm"] = np.where(m, cal.apply(qmap), 0.0)
        units["mwf_qpm"] = "%"
        descs["mwf_qpm"] = "MWF-calibrated QPM myelin map, MWF = c0 + c1 M + c2 M^2 (%)"
        params["calibration"] = cal.to_dict()
    return Maps(arrays, units=units, descriptions=descs, method=f"QPM myelin ({method})", parameters=params)


# --------------------------------------------------------------------------- calibration to MWF
@dataclass
class MwfCalibration:
    """Quadratic calibration ``MWF[%] = c0 + c1 M + c2 M^2`` of a QPM myelin map ``M`` to MWF.

    Attributes
    ----------
    coefficients : tuple of float
        ``(c0, c1, c2)``; MWF in percent, ``M`` in the units of the QPM map (fraction).
    r2 : float
        Coefficient of determination of the fit.
    residual_sd : float
        Residual standard deviation (MWF %), ``sqrt(SS_res / (n - 3))``.
    n : int
        Number of points fitted (voxels or tract means).
    basis : str
        ``"voxels"`` or ``"tract means"``.
    """

    coefficients: tuple[float, float, float]
    r2: float
    residual_sd: float
    n: int
    basis: str = "voxels"
    extra: dict = field(default_factory=dict)

    def apply(self, qpm_map) -> np.ndarray:
        """MWF-calibrated map (%) of a QPM myelin map."""
        c0, c1, c2 = self.coefficients
        q = np.asarray(qpm_map, dtype=float)
        return c0 + c1 * q + c2 * q * q

    def to_dict(self) -> dict:
        return {
            "model": "MWF[%] = c0 + c1*M + c2*M^2",
            "coefficients": [float(c) for c in self.coefficients],
            "r2": float(self.r2),
            "residual_sd_percent": float(self.residual_sd),
            "n": int(self.n),
            "basis": self.basis,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "MwfCalibration":
        try:
            c = [float(x) for x in d["coefficients"]]
            if len(c) != 3:
                raise ValueError
            known = {"model", "coefficients", "r2", "residual_sd_percent", "n", "basis"}
            return cls(tuple(c), float(d.get("r2", np.nan)), float(d.get("residual_sd_percent", np.nan)),
                       int(d.get("n", 0)), str(d.get("basis", "voxels")), {k: v for k, v in d.items() if k not in known})
        except (KeyError, TypeError, ValueError):
            raise InputError("calibration: expected a JSON object with 3 'coefficients' (c0, c1, c2); "
                             "use a file written by 'napari-myelin calibrate'.") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as JSON (atomically)."""
        from napari_myelin.io.volume import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode("utf-8"))
        return path

    @classmethod
    def load(cls, source) -> "MwfCalibration":
        """Read a calibration from a JSON file path or a dict."""
        if isinstance(source, dict):
            return cls.from_dict(source)
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: calibration file not found; write one with 'napari-myelin calibrate'.")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            raise InputError(f"{path}: not valid JSON; use a file written by 'napari-myelin calibrate'.") from None


@dataclass
class CalibrationResult(Maps):
    """:class:`Maps` with ``mwf_qpm`` (%) plus the fitted :class:`MwfCalibration` and the points fitted."""

    calibration: MwfCalibration | None = None
    points: tuple[np.ndarray, np.ndarray] | None = None  # (qpm, mwf %) fitted, for plots


def fit_mwf_calibration(
    mwf,
    qpm,
    mask=None,
    *,
    labels=None,
    mwf_units: str = "auto",
    min_points: int = 4,
    progress=None,
    cancel=None,
) -> CalibrationResult:
    """Fit ``MWF[%] = c0 + c1 M + c2 M^2`` between an MWF map and a QPM myelin map ``M``.

    Ordinary least squares on the white-matter voxels (``mask``), or, with ``labels``, on the
    per-tract means (each nonzero label inside the mask is one point). Reports the coefficients,
    ``R^2 = 1 - SS_res/SS_tot`` and the residual SD ``sqrt(SS_res/(n - 3))``; the result holds the
    calibrated map ``mwf_qpm = c0 + c1 M + c2 M^2`` (%) over the whole grid (0 where ``M`` is not finite).

    Parameters
    ----------
    mwf : array_like
        MWF map (fraction 0-1, or percent; see ``mwf_units``).
    qpm : array_like
        QPM myelin map on the same grid.
    mask : array_like of bool, optional
        White-matter voxels to fit (default: every voxel where both maps are finite and MWF > 0).
    labels : array_like of int, optional
        Tract labels; fit on tract means instead of voxels.
    mwf_units : {"auto", "fraction", "percent"}
        ``"auto"``: percent when the 99th percentile of MWF in the mask exceeds 1.5.
    min_points : int
        Fewest points accepted (voxels or tracts).

    Returns
    -------
    CalibrationResult
        ``result["mwf_qpm"]`` (%), ``result.calibration`` (:class:`MwfCalibration`, ``save()`` to JSON,
        ``apply()`` to another map), ``result.points`` (the fitted points).
    """
    mwf = np.asarray(mwf, dtype=float)
    q = np.asarray(qpm, dtype=float)
    if mwf.shape != q.shape:
        raise InputError(f"calibration: MWF grid {mwf.shape} differs from QPM grid {q.shape}; register them to one grid first.")
    ok = np.isfinite(mwf) & np.isfinite(q)
    if mask is None:
        m = ok & (mwf > 0)
    else:
        m = np.asarray(mask).astype(bool)
        if m.shape != q.shape:
            raise InputError(f"calibration mask: shape {m.shape} differs from the maps {q.shape}; use a mask on the same grid.")
        m &= ok
    step(progress, cancel, 0.0, "calibrating QPM to MWF")
    if mwf_units == "auto":
        scale = 1.0 if (m.any() and np.percentile(mwf[m], 99) > 1.5) else 100.0
    elif mwf_units in ("percent", "%"):
        scale = 1.0
    elif mwf_units == "fraction":
        scale = 100.0
    else:
        raise InputError(f"mwf_units: '{mwf_units}' is not known; use 'auto', 'fraction' or 'percent'.")
    y_all = mwf * scale
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != q.shape:
            raise InputError(f"calibration labels: shape {lab.shape} differs from the maps {q.shape}; use labels on the same grid.")
        lab = np.where(m, lab.astype(np.int64), 0)
        ids = np.unique(lab[lab > 0])
        x = np.array([q[lab == i].mean() for i in ids])  # one mean per tract (few tracts)
        y = np.array([y_all[lab == i].mean() for i in ids])
        basis = "tract means"
    else:
        x, y = q[m], y_all[m]
        basis = "voxels"
    if x.size < min_points:
        raise InputError(
            f"calibration: only {x.size} {basis} to fit 3 coefficients; give a larger white-matter mask (at least {min_points})."
        )
    if np.ptp(x) <= 0:
        raise InputError("calibration: the QPM map is constant over the mask; check that the right map was given.")
    v = np.stack([np.ones_like(x), x, x * x], axis=-1)
    coef, *_ = np.linalg.lstsq(v, y, rcond=None)
    fit = v @ coef
    ss_res = float(((y - fit) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    sd = float(np.sqrt(ss_res / max(x.size - 3, 1)))
    cal = MwfCalibration(tuple(float(c) for c in coef), r2, sd, int(x.size), basis)
    mwf_qpm = np.where(np.isfinite(q), cal.apply(np.nan_to_num(q)), 0.0)
    step(progress, cancel, 1.0, "calibration done")
    return CalibrationResult(
        {"mwf_qpm": mwf_qpm},
        units={"mwf_qpm": "%"},
        descriptions={"mwf_qpm": "MWF-calibrated QPM myelin map, MWF = c0 + c1 M + c2 M^2 (%)"},
        method="quadratic MWF calibration",
        parameters={"calibration": cal.to_dict()},
        calibration=cal,
        points=(x, y),
    )


# --------------------------------------------------------------------------- whole pipeline and grids
def qpm(
    signals,
    flip_angles_deg,
    tr,
    *,
    b1=None,
    method: str = "two-pool",
    mask=None,
    csf_mask=None,
    calibration=None,
    progress=None,
    cancel=None,
    **model_params,
) -> Maps:
    """T1, PD, MTV, QPM myelin map (and MWF-calibrated map) from one SPGR series.

    :func:`fit_vfa` then :func:`myelin_map` (``two-pool`` on the signals, or ``r1-pd`` on the fitted
    T1), both with the fitted PD for the free-water share, on the same mask. This is what the CLI
    ``napari-myelin qpm`` and the widget call. ``model_params`` go to :func:`myelin_map`
    (``t1_m``, ``t1_ie``, ``tau_m``, ``t1_fw``, ``pd_tissue`` (``None``: no free-water pool), ``f_max``).

    Returns
    -------
    Maps
        ``t1`` (s), ``m0``, ``pd``, ``mtv``, ``qpm_myelin`` (fraction), ``free_water`` (fraction) and,
        with ``calibration``, ``mwf_qpm`` (%).
    """
    fa, tr = check_protocol(flip_angles_deg, tr)
    sig = _check_signals(signals, fa.size)
    if method == "two-pool" and np.unique(fa).size < 3:
        raise InputError(
            f"two-pool myelin map: {np.unique(fa).size} distinct flip angles given; the two-pool fit needs at least 3 "
            "(e.g. 3, 10 and 20 deg); use method 'r1-pd' with 2 angles."
        )
    m = _mask_of(mask, sig)
    vfa = fit_vfa(sig, fa, tr, b1=b1, mask=m, csf_mask=csf_mask, progress=subrange(progress, 0.0, 0.3), cancel=cancel)
    if method == "two-pool":
        my = myelin_map(sig, fa, tr, method=method, b1=b1, mask=m, pd=vfa["pd"], calibration=calibration,
                        progress=subrange(progress, 0.3, 1.0), cancel=cancel, **model_params)
    else:
        my = myelin_map(method=method, t1=vfa["t1"], pd=vfa["pd"], mask=m, calibration=calibration,
                        progress=subrange(progress, 0.3, 1.0), cancel=cancel, **model_params)
    return Maps(
        {**vfa.arrays, **my.arrays},
        units={**vfa.units, **my.units},
        descriptions={**vfa.descriptions, **my.descriptions},
        method=f"{vfa.method}; {my.method}",
        parameters={**vfa.parameters, "myelin": my.parameters},
    )


def mask_from_map(data) -> np.ndarray:
    """Boolean mask from a mask image: a fractional (probability) map in [0, 1] is thresholded at 0.5,
    anything else (binary masks, label maps) at > 0."""
    arr = np.nan_to_num(np.asarray(data, dtype=float))
    if arr.size and arr.min() >= 0 and arr.max() <= 1 and np.any((arr > 0) & (arr < 1)):
        return arr >= 0.5
    return arr > 0


def spgr_protocol(metadata: dict, n_volumes: int, *, flip_angles_deg=None, tr=None, source: str = "SPGR series"):
    """Flip angles (deg) and TR (s) of an SPGR series: given values override the BIDS sidecar.

    ``FlipAngle`` (a list, one per volume) and ``RepetitionTime`` are read from ``metadata``; the
    result is validated by :func:`check_protocol` (count vs volumes, >= 2 angles, TR present).
    """
    fa = flip_angles_deg if flip_angles_deg is not None and len(np.atleast_1d(flip_angles_deg)) else metadata.get("FlipAngle")
    tr = tr if tr is not None else metadata.get("RepetitionTime")
    return check_protocol(fa, tr, n_volumes, source=source)


def load_spgr(paths, *, flip_angles_deg=None, tr=None):
    """Load an SPGR series: one 4D file, or several 3D files (one per flip angle, sidecars read).

    Returns
    -------
    (Volume, ndarray, float)
        The 4D series, its flip angles (deg) and TR (s).
    """
    from napari_myelin.io.volume import Volume, load_volume

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise InputError("SPGR series: no file was given; pass the 4D SPGR image (or one file per flip angle).")
    vols = [load_volume(p) for p in paths]
    if len(vols) == 1:
        vol = vols[0]
        if vol.data.ndim != 4:
            raise InputError(f"{vol.path}: is 3D; the SPGR series needs one volume per flip angle (4D, or several files).")
        meta = vol.metadata
    else:
        for v in vols:
            if v.data.ndim != 3 or v.shape != vols[0].shape or not np.allclose(v.affine, vols[0].affine, atol=1e-4):
                raise InputError(f"{v.path}: not a 3D volume on the grid of {vols[0].path}; all flip angles must share one grid.")
        meta = dict(vols[0].metadata)
        if flip_angles_deg is None:
            if any("FlipAngle" not in v.metadata for v in vols):
                missing = next(v.path for v in vols if "FlipAngle" not in v.metadata)
                raise InputError(f"{missing}: its JSON sidecar has no FlipAngle; add it (deg) or pass --flip-angles.")
            meta["FlipAngle"] = [float(np.atleast_1d(v.metadata["FlipAngle"])[0]) for v in vols]
        vol = Volume(np.stack([v.data for v in vols], axis=-1), vols[0].affine, vols[0].header, meta, vols[0].path)
    fa, tr = spgr_protocol(meta, vol.shape[3], flip_angles_deg=flip_angles_deg, tr=tr, source=str(vol.path))
    return vol, fa, tr

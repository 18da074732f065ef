"""SPGR steady-state signal equations: one pool (Ernst equation, DESPOT1) and two exchanging pools
(SPGR branch of mcDESPOT), vectorised over any broadcast voxel shape.

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

(the T2* decay to the echo time is absorbed in ``M0``). ``expm`` of the 2 x 2 matrix
(:func:`napari_myelin.reconst.exchange.expm2`) and the 2 x 2 inverse are taken in closed form, so both
models are vectorised over any broadcast voxel shape.
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
"""

from __future__ import annotations

import numpy as np

from napari_myelin.reconst.exchange import expm2

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
    e11, e12, e21, e22 = expm2(-r1m - km, kie, km, -r1i - kie, float(tr))
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

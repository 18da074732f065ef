r"""Spoiled gradient echo (variable flip angle): exchanging pools in the Bloch-McConnell steady state.

Each tissue class of a voxel (:mod:`.tissue`) holds a myelin-water pool (fraction ``mwf`` of its
water, ``T1_m``) and an intra/extra-cellular pool (``T1_IE``) exchanging with the residence time
``tau_m`` (``k_{m->ie} = 1/tau_m``, detailed balance); CSF is one pool. With perfect spoiling and
the same flip ``a = B1 alpha`` for both pools, the longitudinal magnetisation before each pulse is
the fixed point of ``M = E (cos(a) M - M_eq) + M_eq`` with ``E = expm((X - R_1) TR)``
(Bloch-McConnell, McConnell 1958; the SPGR branch of mcDESPOT, Deoni et al. 2008)::

    (I - cos(a) E) M^- = (I - E) M_eq,        S = sin(a) sum_p M^-_p exp(-TE / T2*_p)

solved per voxel with :func:`.epg.expm_generator` and :func:`numpy.linalg.solve` for any number of
pools. Without exchange it is the sum of the pools' Ernst equations. Unlike the estimators' model
the pools keep their own T2* at the echo time (myelin water ~ 9 ms: its signal is partly gone at
TE = 2.9 ms), and the pool T1s and residence time are the subject's own draws.

**Imperfect spoiling** (``spoiling="rf50"`` or ``"rf117"``): the pulse train is simulated by EPG-X
(:func:`.epg.spgr_pulse_train`: quadratic RF-spoiling increment 50 or 117 deg, one unit of gradient
dephasing per TR, transverse exchange, no diffusion damping; :data:`.constants.SPOIL_PULSES`
pulses from the ideal steady state, dephasing orders beyond ``8 T2 / TR`` dropped; Preibisch &
Deichmann 2009). It is tabulated per class as the ratio to the
ideal steady state on ``(f_m, B1)`` for each nominal flip and applied to the exact ideal signal.

References
----------
McConnell HM. J Chem Phys 28:430-431 (1958).  Deoni SCL et al. Magn Reson Med 60:1372-1387 (2008).
Preibisch C, Deichmann R. Magn Reson Med 61:125-135 (2009).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from napari_myelin.sims.independent.constants import SPGR_FLIPS, SPGR_TE, SPGR_TR, SPOIL_PULSES
from napari_myelin.sims.independent.epg import Pools, expm_generator, spgr_pulse_train, two_site_exchange
from napari_myelin.sims.independent.tissue import CSF, GM, LESION, NAWM, water

SPOILING = {"ideal": None, "rf50": 50.0, "rf117": 117.0}
_FM = np.linspace(0.0, 0.32, 9)
_B1 = np.linspace(0.7, 1.3, 13)


def steady_state(m_eq, r1, k, flip_deg, tr: float) -> np.ndarray:
    """Longitudinal magnetisation of each pool just before a pulse, shape ``(..., n_flips, P)``.

    Parameters
    ----------
    m_eq, r1 : ndarray, shape (..., P)
        Equilibrium magnetisation and R1 (1/s) of the pools.
    k : ndarray, shape (..., P, P) or None
        Exchange rates (``k[..., i, j]`` from pool ``j`` to ``i``).
    flip_deg : ndarray, shape (..., n_flips)
        Actual flip angles (deg).
    tr : float
        Repetition time (s).
    """
    m_eq, r1 = np.asarray(m_eq, float), np.asarray(r1, float)
    p = m_eq.shape[-1]
    lead = np.broadcast_shapes(m_eq.shape[:-1], r1.shape[:-1], () if k is None else np.shape(k)[:-2])
    a = np.zeros(lead + (p, p)) - np.broadcast_to(r1, lead + (p,))[..., None] * np.eye(p)
    if k is not None:
        kk = np.array(np.broadcast_to(k, lead + (p, p)))
        kk[..., np.arange(p), np.arange(p)] = 0.0
        a += kk - np.eye(p) * kk.sum(axis=-2)[..., None, :]
    e = expm_generator(a * tr)
    rhs = np.einsum("...ij,...j->...i", np.eye(p) - e, np.broadcast_to(m_eq, lead + (p,)))
    cos = np.cos(np.deg2rad(np.asarray(flip_deg, float)))[..., None, None]
    lhs = np.eye(p) - cos * e[..., None, :, :]
    return np.linalg.solve(lhs, np.broadcast_to(rhs[..., None, :, None], lhs.shape[:-1] + (1,)))[..., 0]


def _pool_parameters(cl: dict, tissue: dict, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m_eq`` (N, 2), ``r1`` (N, 2), exchange (N, 2, 2) and T2* weights (N, 2) of tissue class ``c``."""
    f = np.clip(cl["mwf"][:, c], 0.0, 0.999)
    m_eq = np.stack([f, 1 - f], axis=1)
    r1 = np.stack(np.broadcast_arrays(1.0 / cl["t1_my"], 1.0 / cl["t1_ie"][:, c]), axis=1)
    t2s = np.array([tissue["t2s_myelin"], tissue["t2s_extra"]])
    return m_eq, r1, two_site_exchange(f, tissue["tau_myelin"]), np.exp(-SPGR_TE / t2s) * np.ones((f.size, 1))


def class_signals(cl: dict, tissue: dict, b1: np.ndarray, flips=SPGR_FLIPS, tr: float = SPGR_TR,
                  spoiling: str = "ideal") -> np.ndarray:
    """Noise-free SPGR signal (N, n_flips) per unit of pure-water magnetisation (module docstring)."""
    alpha = np.asarray(flips, float)[None, :] * b1[:, None]
    s = np.zeros(alpha.shape)
    w = water(cl)
    for c in (NAWM, LESION, GM):
        m_eq, r1, k, t2w = _pool_parameters(cl, tissue, c)
        m = steady_state(m_eq, r1, k, alpha, tr)
        sig = np.sin(np.deg2rad(alpha)) * (m * t2w[:, None, :]).sum(-1)
        if SPOILING[spoiling] is not None:
            sig *= _spoiling_ratio(c, spoiling, tissue, cl)(np.stack([np.clip(m_eq[:, 0], _FM[0], _FM[-1]),
                                                                      np.clip(b1, _B1[0], _B1[-1])], axis=-1))
        s += w[:, c:c + 1] * sig
    r1_csf = 1.0 / cl["t1_ie"][:, CSF]
    m = steady_state(np.ones((r1_csf.size, 1)), r1_csf[:, None], None, alpha, tr)[..., 0]
    sig = np.sin(np.deg2rad(alpha)) * m * np.exp(-SPGR_TE * tissue["r2s_csf"])
    if SPOILING[spoiling] is not None:
        sig *= _spoiling_ratio(CSF, spoiling, tissue, cl)(np.stack([np.zeros(b1.size),
                                                                    np.clip(b1, _B1[0], _B1[-1])], axis=-1))
    return s + w[:, CSF:CSF + 1] * sig


def _spoiling_ratio(c: int, spoiling: str, tissue: dict, cl: dict) -> RegularGridInterpolator:
    """Ratio imperfect/ideal spoiling on ``(f_m, B1)`` for each flip, for class ``c`` (cached per subject)."""
    t1_ie = {NAWM: tissue["t1_ie_wm"], LESION: tissue["t1_ie_wm"] * (1 + (tissue["lesion_t1_factor"] - 1) * 0.65),
             GM: tissue["t1_ie_gm"], CSF: tissue["t1_csf"]}[c]
    t2_ie = {NAWM: tissue["t2_ie_wm"], LESION: tissue["t2_ie_wm"] * tissue["lesion_t2_factor"] ** 0.65,
             GM: tissue["t2_ie_gm"], CSF: tissue["t2_csf"]}[c]
    return _ratio_table(c == CSF, spoiling, float(cl["t1_my"]), float(t1_ie), float(tissue["t2_myelin"]),
                        float(t2_ie), float(tissue["tau_myelin"]))


@functools.lru_cache(maxsize=16)
def _ratio_table(single: bool, spoiling: str, t1_my: float, t1_ie: float, t2_my: float, t2_ie: float,
                 tau: float) -> RegularGridInterpolator:
    """EPG-X / ideal steady-state signal ratio on ``(f_m, B1)`` (values: one per flip); ``single``: CSF."""
    fm = np.zeros(1) if single else _FM
    alpha = np.asarray(SPGR_FLIPS)[None, None, :] * _B1[None, :, None]  # chains (f_m, B1, flip)
    f = fm[:, None, None]
    if single:
        m_eq, r1, r2, k = np.ones((1, 1, 1, 1)), np.array([1 / t1_ie]), np.array([1 / t2_ie]), None
    else:
        m_eq, r1, r2 = np.stack([f, 1 - f], axis=-1), np.array([1 / t1_my, 1 / t1_ie]), np.array([1 / t2_my, 1 / t2_ie])
        k = two_site_exchange(f, tau)
    ideal = steady_state(m_eq[:, 0], r1, None if k is None else k[:, 0], alpha[0], SPGR_TR)  # (f_m, B1, flip, P)
    orders = min(SPOIL_PULSES, int(np.ceil(8 * max(t2_my, t2_ie) / SPGR_TR)) + 2)  # exp(-8): negligible
    real = spgr_pulse_train(Pools(m_eq, r1, r2, k), alpha, SPGR_TR, SPOIL_PULSES,
                            rf_increment_deg=SPOILING[spoiling], initial=ideal, n_states=orders)
    ratio = np.abs(real.sum(-1)) / np.maximum(np.sin(np.deg2rad(alpha)) * ideal.sum(-1), 1e-12)
    if single:
        ratio, fm = np.repeat(ratio, 2, axis=0), np.array([0.0, 1.0])
    return RegularGridInterpolator((fm, _B1), ratio)

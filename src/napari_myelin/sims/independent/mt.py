r"""Magnetization transfer: MT-, PD- and T1-weighted SPGR (BIDS MTS) from a time-resolved two-pool model.

Every tissue class of a voxel (:mod:`.tissue`) is a free water pool ``f`` (all the class water, equilibrium
1 per unit of water) exchanging with a bound macromolecular pool ``b`` of relative size ``F = M0b / M0f``
that follows the class myelin, ``F = F0 + s MWF`` (``F0``, ``s`` drawn per subject; lesions lose ``F``
with their myelin; CSF has none). Longitudinal magnetisation ``M = (Mf, Mb)`` obeys the Bloch-McConnell
equations with saturation (Henkelman et al. 1993; Sled & Pike 2000)::

    dM/dt = A(t) M + c,   A = [[-R1f - kf - Wf(t),            kr          ],
                               [       kf,          -R1b - kr - Wb(t)     ]],   c = (R1f, R1b F),

with ``kf = kr F``. The saturation rates of an RF field ``w1(t)`` at offset ``D`` are
``Wb = pi w1^2 G(D)`` (super-Lorentzian line of the bound pool, Morrison & Henkelman 1995, evaluated by
Gauss-Legendre quadrature, :func:`super_lorentzian`) and ``Wf = pi w1^2 g(D)`` (Lorentzian line of the free
pool with the class water T2: direct saturation). ``R1f`` is chosen so that the slow eigenvalue of the
relaxation-exchange matrix (no RF) is the class's observed ``R1 = 1/T1`` (:mod:`.tissue`)::

    R1f = R1 - kf + kf kr / (R1b + kr - R1),

so the MTS series carry the T1 of the other acquisitions (exactly, not in a quasi-equilibrium limit).

**Sequence** (one repetition, from just before the excitation): excitation at ``B1 a`` (free pool
``Mz -> cos(B1 a) Mz``; the bound pool saturated by the on-resonance pulse, ``exp(-pi w1^2 G(0) t_p)``
with ``G(0)`` the extrapolated super-Lorentzian, Gloor et al. 2008), free evolution, then (MTw only) the
off-resonance MT pulse **resolved in time** (the Gaussian envelope on :data:`.constants.MT_PULSE` ``steps``
piecewise-constant intervals, exchange and relaxation during the pulse; ``w1`` scales with B1), a gap
and the next excitation. Each interval is the affine map ``M -> P M + q`` with ``P = expm(A t)``
(closed form for 2x2, :func:`expm2x2`) and ``q = (I - P) M_inf``, ``M_inf = -A^-1 c``; the steady state is
the fixed point of the composed map, ``M = (I - P) ^-1 q``. Signal: ``sin(B1 a) Mf`` times the class's
T2* weight at TE, the class water and the receive profile.

**Truth** (:func:`mts_truth`): ``mtsat`` (p.u.) is the MT saturation ``delta`` of Helms' exact single-pool
equation that reproduces the noise-free MTw signal **at the nominal transmit field** (B1 = 1), given the
voxel's true T1 (the water-weighted R1 of the other acquisitions' truth) and the amplitude of the noise-free
PDw signal at B1 = 1: the tissue property that a B1-corrected MTsat aims at (Helms et al. 2008). ``mtr``
(%) is ``100 (PDw - MTw) / PDw`` of the noise-free signals at the actual field, ``bpf`` the voxel's
``F`` (water-weighted over its classes).

Neglected: the transverse magnetisation of the free pool during the MT pulse (its direct saturation is the
Lorentzian rate), imperfect spoiling, the bound pool's own dipolar order.

References
----------
Henkelman RM et al. Quantitative interpretation of magnetization transfer. Magn Reson Med 29:759-766 (1993).
Morrison C, Henkelman RM. A model for magnetization transfer in tissues. Magn Reson Med 33:475-482 (1995).
Sled JG, Pike GB. Quantitative interpretation of magnetization transfer in spoiled gradient echo MRI
sequences. J Magn Reson 145:24-36 (2000).
Sled JG, Pike GB. Quantitative imaging of magnetization transfer exchange and relaxation properties in
vivo using MRI. Magn Reson Med 46:923-931 (2001).
Gloor M, Scheffler K, Bieri O. Quantitative magnetization transfer imaging using balanced SSFP. Magn Reson
Med 60:691-700 (2008).
Helms G, Dathe H, Kallenberg K, Dechent P. High-resolution maps of magnetization transfer with inherent
correction for RF inhomogeneity and T1 relaxation obtained from 3D FLASH MRI. Magn Reson Med
60:1396-1407 (2008).
"""

from __future__ import annotations

import functools

import numpy as np

from napari_myelin.sims.independent.constants import (EXC_PULSE_S, MT_G0_PER_T2B, MT_PULSE, MT_R1B, MTS_FLIPS,
                                                      MTS_TE, MTS_TRS)
from napari_myelin.sims.independent.tissue import CSF, GM, LESION, NAWM, water


@functools.lru_cache(maxsize=64)
def super_lorentzian(offset_hz: float, t2b: float, nodes: int = 400) -> float:
    """Super-Lorentzian absorption line ``G(D)`` (s) of the bound pool at offset ``D`` (Hz).

    ``G(D) = sqrt(2/pi) int_0^1 T2b / |3u^2 - 1| exp(-2 (2 pi D T2b / (3u^2 - 1))^2) du``
    (Morrison & Henkelman 1995), by Gauss-Legendre quadrature on each side of the magic angle
    ``u = 1/sqrt(3)`` (the integrand vanishes there for ``D != 0``).
    """
    x, w = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for lo, hi in ((0.0, 1.0 / np.sqrt(3.0)), (1.0 / np.sqrt(3.0), 1.0)):
        u = 0.5 * (hi - lo) * x + 0.5 * (hi + lo)
        c = np.abs(3.0 * u * u - 1.0)
        f = t2b / c * np.exp(-2.0 * (2.0 * np.pi * offset_hz * t2b / c) ** 2)
        total += 0.5 * (hi - lo) * float(np.dot(w, f))
    return float(np.sqrt(2.0 / np.pi) * total)


def gaussian_pulse(flip_deg: float, duration: float, steps: int) -> tuple[np.ndarray, float]:
    """Amplitudes ``w1`` (rad/s) at the midpoints of ``steps`` equal intervals of a Gaussian pulse and the
    interval (s): envelope ``exp(-t^2 / 2 sigma^2)``, ``sigma = duration / 6`` (truncated at +-3 sigma),
    scaled so that the piecewise-constant pulse has the nominal flip ``sum(w1) dt``."""
    dt = duration / steps
    t = (np.arange(steps) + 0.5) * dt - duration / 2.0
    env = np.exp(-0.5 * (t / (duration / 6.0)) ** 2)
    return np.deg2rad(flip_deg) * env / (env.sum() * dt), dt


def expm2x2(a11, a12, a21, a22, t) -> np.ndarray:
    """``expm(A t)`` of a batch of real 2x2 matrices with real eigenvalues, shape ``(..., 2, 2)``.

    ``e^{m t} [cosh(d t) I + sinh(d t)/d (A - m I)]`` with ``m = (a11 + a22)/2``,
    ``d = sqrt(((a11 - a22)/2)^2 + a12 a21)`` (``sinh(d t)/d -> t`` as ``d -> 0``).
    """
    a11, a12, a21, a22 = np.broadcast_arrays(*(np.asarray(x, float) for x in (a11, a12, a21, a22)))
    m = 0.5 * (a11 + a22)
    d = np.sqrt(np.maximum(0.25 * (a11 - a22) ** 2 + a12 * a21, 0.0))
    ch = np.cosh(d * t)
    sh = np.where(d * t > 1e-8, np.sinh(d * t) / np.where(d > 0, d, 1.0), t)
    e = np.exp(m * t)
    out = np.empty(a11.shape + (2, 2))
    out[..., 0, 0] = e * (ch + sh * (a11 - m))
    out[..., 0, 1] = e * sh * a12
    out[..., 1, 0] = e * sh * a21
    out[..., 1, 1] = e * (ch + sh * (a22 - m))
    return out


def _interval(r1f, r1b, kf, kr, f, wf, wb, t) -> tuple[np.ndarray, np.ndarray]:
    """Affine map ``(P, q)`` of one interval of constant saturation rates (module docstring)."""
    a11, a12, a21, a22 = -r1f - kf - wf, kr + 0 * r1f, kf, -r1b - kr - wb
    p = expm2x2(a11, a12, a21, a22, t)
    c1, c2 = r1f, r1b * f
    det = a11 * a22 - a12 * a21
    m_inf = np.stack([-(a22 * c1 - a12 * c2) / det, -(-a21 * c1 + a11 * c2) / det], axis=-1)
    q = m_inf - np.einsum("...ij,...j->...i", p, m_inf)
    return p, q


def _compose(first: tuple, then: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``then`` after ``first`` for affine maps ``M -> P M + q``."""
    p1, q1 = first
    p2, q2 = then
    return p2 @ p1, np.einsum("...ij,...j->...i", p2, q1) + q2


def class_signal(r1, f, t2f, b1, tissue: dict, flip_deg: float, tr: float, mt_pulse: bool) -> np.ndarray:
    """Free-pool steady-state SPGR signal ``sin(B1 a) Mf`` per unit of class water (N,), module docstring.

    Parameters
    ----------
    r1 : ndarray (N,)
        Observed longitudinal rate of the class water (1/s).
    f : ndarray (N,)
        Bound-pool size ``F`` (0: a single pool).
    t2f : ndarray (N,)
        Free-pool T2 (s) for its direct saturation.
    b1 : ndarray (N,)
        Transmit ratio.
    tissue : dict
        The subject's draws (``mt_kr``, ``mt_t2b``).
    flip_deg, tr : float
        Nominal excitation flip (deg) and repetition time (s).
    mt_pulse : bool
        Whether the MT pulse of :data:`.constants.MT_PULSE` precedes each excitation.
    """
    r1, f, t2f, b1 = (np.asarray(x, float) for x in (r1, f, t2f, b1))
    kr, t2b, r1b = tissue["mt_kr"], tissue["mt_t2b"], MT_R1B
    kf = kr * f
    r1f = r1 - kf + kf * kr / (r1b + kr - r1)
    alpha = np.deg2rad(flip_deg) * b1
    w1_exc = alpha / EXC_PULSE_S
    exc_b = np.exp(-np.pi * w1_exc ** 2 * MT_G0_PER_T2B * t2b * EXC_PULSE_S)
    p_exc = np.zeros(r1.shape + (2, 2))
    p_exc[..., 0, 0], p_exc[..., 1, 1] = np.cos(alpha), exc_b
    step = (p_exc, np.zeros(r1.shape + (2,)))
    zero = np.zeros_like(r1)
    if not mt_pulse:
        step = _compose(step, _interval(r1f, r1b, kf, kr, f, zero, zero, tr))
    else:
        w1, dt = gaussian_pulse(MT_PULSE["flip_deg"], MT_PULSE["duration_s"], MT_PULSE["steps"])
        g_b = super_lorentzian(MT_PULSE["offset_hz"], t2b)
        g_f = (t2f / np.pi) / (1.0 + (2.0 * np.pi * MT_PULSE["offset_hz"] * t2f) ** 2)
        free = tr - MT_PULSE["duration_s"] - MT_PULSE["gap_s"]
        step = _compose(step, _interval(r1f, r1b, kf, kr, f, zero, zero, free))
        for w in w1:
            wb = np.pi * (w * b1) ** 2 * g_b
            step = _compose(step, _interval(r1f, r1b, kf, kr, f, np.pi * (w * b1) ** 2 * g_f, wb, dt))
        step = _compose(step, _interval(r1f, r1b, kf, kr, f, zero, zero, MT_PULSE["gap_s"]))
    p, q = step
    m = np.linalg.solve(np.eye(2) - p, q[..., None])[..., 0]
    return np.sin(alpha) * m[..., 0]


def bound_fraction(cl: dict, tissue: dict) -> np.ndarray:
    """Bound-pool size ``F`` of each class (N, 4): ``F0 + s MWF`` of the class water, 0 in CSF."""
    f = tissue["mt_f0"] + tissue["mt_f_slope"] * cl["mwf"]
    f[:, CSF] = 0.0
    return f


def _t2s_weight(cl: dict, tissue: dict) -> np.ndarray:
    """Signal fraction left at TE of each class (N, 4): myelin and IE water with their T2* in WM classes."""
    n = cl["mwf"].shape[0]
    out = np.empty((n, 4))
    for c in (NAWM, LESION):
        m = cl["mwf"][:, c]
        out[:, c] = m * np.exp(-MTS_TE / tissue["t2s_myelin"]) + (1 - m) * np.exp(-MTS_TE / tissue["t2s_extra"])
    out[:, GM] = np.exp(-MTS_TE * tissue["r2s_gm"])
    out[:, CSF] = np.exp(-MTS_TE * tissue["r2s_csf"])
    return out


def mts_signals(cl: dict, tissue: dict, b1: np.ndarray) -> np.ndarray:
    """Noise-free MTw, PDw, T1w signals (N, 3) per unit of pure-water magnetisation (module docstring)."""
    r1 = np.where(np.arange(4) == CSF, 1.0 / cl["t1_ie"], 1.0 / cl["t1_fast"])
    f = bound_fraction(cl, tissue)
    t2f = cl["t2_ie"]
    w = water(cl) * _t2s_weight(cl, tissue)
    out = np.zeros((b1.size, 3))
    for i, (flip, tr) in enumerate(zip(MTS_FLIPS, MTS_TRS)):
        for c in range(4):
            out[:, i] += w[:, c] * class_signal(r1[:, c], f[:, c], t2f[:, c], b1, tissue, flip, tr, mt_pulse=i == 0)
    return out


def helms_delta(s_mt, s_pd, t1) -> np.ndarray:
    """MT saturation of Helms' exact single-pool equation at the nominal angles of :data:`.constants.MTS_FLIPS`.

    ``A = S_PD (1 - E_PD cos a_PD) / (sin a_PD (1 - E_PD))``, ``s = S_MT / (A sin a_MT)``,
    ``delta = 1 - s / (1 - E_MT + s cos(a_MT) E_MT)``, ``E = exp(-TR / T1)`` (Helms et al. 2008).
    """
    a_mt, a_pd = np.deg2rad(MTS_FLIPS[0]), np.deg2rad(MTS_FLIPS[1])
    t1 = np.asarray(t1, float)
    e_mt, e_pd = np.exp(-MTS_TRS[0] / t1), np.exp(-MTS_TRS[1] / t1)
    amp = s_pd * (1.0 - e_pd * np.cos(a_pd)) / (np.sin(a_pd) * (1.0 - e_pd))
    s = s_mt / (amp * np.sin(a_mt))
    return 1.0 - s / (1.0 - e_mt + s * np.cos(a_mt) * e_mt)


def mts_truth(cl: dict, tissue: dict, b1: np.ndarray, signals: np.ndarray) -> dict:
    """Truth of the inside voxels (N,): ``mtsat`` (p.u.), ``mtr`` (%), ``t1`` (s), ``bpf`` (module docstring)."""
    w = water(cl)
    wsum = np.maximum(w.sum(1), 1e-12)
    r1 = (w * np.where(np.arange(4) == CSF, 1.0 / cl["t1_ie"], 1.0 / cl["t1_fast"])).sum(1) / wsum
    nominal = mts_signals(cl, tissue, np.ones_like(b1))
    ok = nominal[:, 1] > 0
    delta = np.zeros(b1.size)
    delta[ok] = helms_delta(nominal[ok, 0], nominal[ok, 1], 1.0 / r1[ok])
    mtr = np.zeros(b1.size)
    good = signals[:, 1] > 0
    mtr[good] = 100.0 * (signals[good, 1] - signals[good, 0]) / signals[good, 1]
    return {"mtsat": 100.0 * delta, "mtr": mtr, "t1": 1.0 / np.maximum(r1, 1e-6),
            "bpf": (w * bound_fraction(cl, tissue)).sum(1) / wsum}

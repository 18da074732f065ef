"""Magnetization transfer of the phantom: a two-pool model of the MT-, PD- and T1-weighted SPGR (BIDS MTS).

Tissue water (the free pool ``f``, all of the voxel's water: proton density ``pd``, observed longitudinal rate
``R1 = 1/T1`` of the phantom's water) exchanges with a bound macromolecular pool ``b`` of relative size
``F = M0b / M0f`` that follows myelin (:data:`.constants.MT_BPF_BASE`, :data:`.constants.MT_BPF_SLOPE`: WM
about 0.15, GM about 0.065, CSF none). Longitudinal magnetisation ``M = (Mf, Mb)`` relaxes and exchanges as
(Henkelman et al. 1993)::

    dM/dt = A M + R1_pools M0,   A = [[-R1f - kf,      kr      ],
                                      [    kf,     -R1b - kr   ]],   kf = kr F,   M0 = pd (1, F)

with ``kr`` (:data:`.constants.MT_KR`) and ``R1b`` (:data:`.constants.MT_R1B`). ``R1f`` is chosen so that the
free pool's rate with the bound pool in quasi-equilibrium, ``R1f + kf R1b / (R1b + kr)``, is the phantom's R1:
the MTS series then show the T1 of the other acquisitions (checked: the exact SPGR inversion of the
noise-free PDw/T1w pair returns it within 0.1 %).

Each repetition (instantaneous-saturation approximation of the MT pulse, Pike 1996; Sled & Pike 2000 compare it
with pulse-resolved models): the MT pulse, if any, leaves the
fraction ``s_b = exp(-pi G(D) integral(w1^2 dt))`` of the bound magnetisation (``G``: super-Lorentzian line of
T2b at the offset ``D``, Morrison & Henkelman 1995; ``w1`` scales with B1, so the exponent with ``B1^2``),
then the excitation rotates the free pool by ``B1 a`` (``cos``) and the signal is ``sin(B1 a) Mf``; both pools
then evolve for TR, ``E = expm(A TR)``. The steady state just before the MT pulse is::

    M = (I - E D)^-1 (I - E) M0,   D = diag(cos(B1 a), s_b)   (s_b = 1 without MT pulse).

Neglected: saturation of the bound pool by the excitation pulse, direct saturation of the free pool by the MT
pulse (Lorentzian line of T2f, about 1e-3 of the bound pool's at 2 kHz), exchange and relaxation during the
4 ms MT pulse.

Truth (see :func:`_mts`): ``mtsat`` is the MT saturation ``delta`` (p.u.) of Helms' single-pool equation that
reproduces the noise-free MTw signal at the nominal transmit field (B1 = 1) given the true T1 and the
amplitude of the PDw signal: the tissue property that B1-corrected MTsat estimates aim at. ``mtr`` is
``100 (PDw - MTw)/PDw`` of the noise-free signals at the actual field, ``t1`` the phantom's T1, ``bpf`` F.

References
----------
Henkelman RM, Huang X, Xiang QS, Stanisz GJ, Swanson SD, Bronskill MJ. Quantitative interpretation of
magnetization transfer. Magn Reson Med 29:759-766 (1993).
Morrison C, Henkelman RM. A model for magnetization transfer in tissues. Magn Reson Med 33:475-482 (1995).
Pike GB. Pulsed magnetization transfer contrast in gradient echo imaging: a two-pool analytic description of
signal response. Magn Reson Med 36:95-103 (1996).
Sled JG, Pike GB. Quantitative interpretation of magnetization transfer in spoiled gradient echo MRI
sequences. J Magn Reson 145:24-36 (2000).
Sled JG, Pike GB. Quantitative imaging of magnetization transfer exchange and relaxation properties in vivo
using MRI. Magn Reson Med 46:923-931 (2001).
Gloor M, Scheffler K, Bieri O. Quantitative magnetization transfer imaging using balanced SSFP. Magn Reson
Med 60:691-700 (2008).
Dula AN, Gochberg DF, Valentine HL, Valentine WM, Does MD. Multiexponential T2, magnetization transfer, and
quantitative histology in white matter tracts of rat spinal cord. Magn Reson Med 63:902-909 (2010).
Underhill HR, Rostomily RC, Mikheev AM, Yuan C, Yarnykh VL. Fast bound pool fraction imaging of the in vivo
rat brain: association with myelin content and validation in the C6 glioma model. NeuroImage
54:2052-2065 (2011).
Weiskopf N, et al. Quantitative multi-parameter mapping of R1, PD*, MT, and R2* at 3T: a multi-center
validation. Front Neurosci 7:95 (2013).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import quad
from scipy.special import erf

from napari_myelin.reconst.exchange import expm2
from napari_myelin.sims.phantom.acquisitions import _b1_field, _Scan
from napari_myelin.sims.phantom.constants import (B0_TESLA, MT_BPF_BASE, MT_BPF_SLOPE, MT_KR, MT_PULSE, MT_R1B,
                                                  MT_T2B, MTS_FLIPS, MTS_SCALE, MTS_TRS)
from napari_myelin.sims.phantom.signals import _rician
from napari_myelin.sims.phantom.truth import _common_truth, _vol

#: Acquisition keys of the three MTS volumes (MTw, PDw, T1w) in :attr:`Phantom.acq`.
MTS_KEYS = ("mts_mtw", "mts_pdw", "mts_t1w")


def super_lorentzian(offset_hz: float, t2b: float = MT_T2B) -> float:
    """Super-Lorentzian absorption line ``G(D)`` (s) of the bound pool (Morrison & Henkelman 1995).

    ``G(D) = int_0^1 sqrt(2/pi) T2b / |3u^2 - 1| exp(-2 (2 pi D T2b / (3u^2 - 1))^2) du``.
    """
    def integrand(u):
        c = abs(3.0 * u * u - 1.0)
        return np.sqrt(2.0 / np.pi) * t2b / c * np.exp(-2.0 * (2.0 * np.pi * offset_hz * t2b / c) ** 2)

    return float(quad(integrand, 0.0, 1.0, points=[1.0 / np.sqrt(3.0)], limit=200)[0])


def bound_saturation(b1=1.0, pulse: dict = MT_PULSE, t2b: float = MT_T2B):
    """Fraction of the bound longitudinal magnetisation left after one MT pulse at transmit ratio ``b1``.

    ``exp(-pi G(D) integral(w1^2 dt) b1^2)`` (saturation rate ``W = pi w1^2 G(D)``; Henkelman et al. 1993) for a
    Gaussian pulse of duration ``tau`` truncated at +-3 sigma (``sigma = tau / 6``) and nominal flip ``theta``:
    ``integral(w1^2 dt) = theta^2 erf(3) / (2 sqrt(pi) sigma erf(3/sqrt(2))^2)`` (rad^2/s).
    """
    sigma = pulse["duration_s"] / 6.0
    theta = np.deg2rad(pulse["flip_deg"])
    energy = theta ** 2 * erf(3.0) / (2.0 * np.sqrt(np.pi) * sigma * erf(3.0 / np.sqrt(2.0)) ** 2)
    w = np.pi * super_lorentzian(pulse["offset_hz"], t2b) * energy
    return np.exp(-w * np.asarray(b1, dtype=float) ** 2)


def _propagator(r1f, kf, tr):
    """``E = expm(A TR)`` of every voxel as ``(E11, E12, E21, E22)`` (closed form, :func:`napari_myelin.reconst.exchange.expm2`)."""
    return expm2(-r1f - kf, MT_KR, kf, -MT_R1B - MT_KR, tr)


def _steady_free(m0, e, bpf, alpha, s_b):
    """Free-pool magnetisation just before excitation, ``[(I - E D)^-1 (I - E) M0]_f``, batched over voxels."""
    e11, e12, e21, e22 = e
    c = np.cos(alpha)
    mf, mb = m0, m0 * bpf
    rhs_f = (1.0 - e11) * mf - e12 * mb
    rhs_b = -e21 * mf + (1.0 - e22) * mb
    g11, g12 = 1.0 - e11 * c, -e12 * s_b
    g21, g22 = -e21 * c, 1.0 - e22 * s_b
    return (g22 * rhs_f - g12 * rhs_b) / (g11 * g22 - g12 * g21)


def simulate_mts(m0, t1, bpf, b1=None, *, flips=MTS_FLIPS, trs=MTS_TRS, pulse: dict = MT_PULSE) -> np.ndarray:
    """MTw, PDw and T1w SPGR signals of the two-pool MT model (module docstring), batched over voxels.

    Parameters
    ----------
    m0 : array_like, shape (N,)
        Free-pool equilibrium magnetisation (signal units).
    t1 : array_like, shape (N,)
        Observed T1 (s) of the water; ``R1f`` follows from it (quasi-equilibrium of the bound pool).
    bpf : array_like, shape (N,)
        Bound-pool size ``F = M0b / M0f``.
    b1 : array_like or None, shape (N,)
        Transmit ratio (scales the excitation angles and the MT pulse).
    flips, trs : sequence of 3 float
        Flip angles (deg) and repetition times (s) of MTw (with the MT pulse), PDw and T1w.

    Returns
    -------
    ndarray, shape (N, 3)
    """
    m0, t1, bpf = (np.asarray(x, dtype=float) for x in (m0, t1, bpf))
    b = np.ones_like(m0) if b1 is None else np.asarray(b1, dtype=float)
    kf = MT_KR * bpf
    r1f = 1.0 / t1 - kf * MT_R1B / (MT_R1B + MT_KR)
    propagators = {tr: _propagator(r1f, kf, tr) for tr in set(trs)}
    s_mt = bound_saturation(b, pulse)
    out = np.empty(m0.shape + (3,))
    for i, (flip, tr) in enumerate(zip(flips, trs)):
        alpha = np.deg2rad(flip) * b
        s_b = s_mt if i == 0 else np.ones_like(m0)
        out[..., i] = np.sin(alpha) * _steady_free(m0, propagators[tr], bpf, alpha, s_b)
    return out


def _helms_delta(s_mt, s_pd, t1, flips=MTS_FLIPS, trs=MTS_TRS) -> np.ndarray:
    """MT saturation of Helms' exact single-pool equation given the true T1 and the PDw amplitude (nominal angles).

    ``A = S_PD (1 - E_PD cos a_PD) / (sin a_PD (1 - E_PD))``; ``s = S_MT / (A sin a_MT)``,
    ``delta = 1 - s / (1 - E_MT + s cos(a_MT) E_MT)`` with ``E = exp(-TR / T1)``.
    """
    a_mt, a_pd = np.deg2rad(flips[0]), np.deg2rad(flips[1])
    e_pd, e_mt = np.exp(-trs[1] / t1), np.exp(-trs[0] / t1)
    amp = s_pd * (1.0 - e_pd * np.cos(a_pd)) / (np.sin(a_pd) * (1.0 - e_pd))
    s = s_mt / (amp * np.sin(a_mt))
    return 1.0 - s / (1.0 - e_mt + s * np.cos(a_mt) * e_mt)


def _mts(scan: _Scan, grid, noise_rng: np.random.Generator) -> tuple[dict, dict]:
    """MT-, PD- and T1-weighted SPGR (tilted 3 deg about x) with the same B1; their truth (MTsat, MTR, T1, F).

    Rician noise of sigma = mean PDw brain signal / SNR, drawn from ``noise_rng`` (MTw, PDw, T1w in turn).
    """
    aff, shp, s = scan.grid(grid, rotation_deg=(3.0, 0, 0))
    common = _common_truth(s, aff)
    mask = common["mask"].data
    pd, t1 = s.linear("pd").ravel(), s.linear("t1").ravel()
    inside = (s.linear("brain").ravel() > 0.05) & (pd > 0) & (t1 > 0)
    bpf = (1.0 - s.linear("f_csf").ravel()) * (MT_BPF_BASE + MT_BPF_SLOPE * s.linear("tissue_mwf").ravel())
    b1 = _b1_field(s.world, scan.b1_params)
    sig = np.zeros((pd.size, 3))
    sig[inside] = simulate_mts(MTS_SCALE * pd[inside], t1[inside], bpf[inside], b1[inside])
    nominal = simulate_mts(MTS_SCALE * pd[inside], t1[inside], bpf[inside])  # B1 = 1: the truth's field
    mtsat, mtr = np.zeros(pd.size), np.zeros(pd.size)
    mtsat[inside] = 100.0 * _helms_delta(nominal[:, 0], nominal[:, 1], t1[inside])
    mtr[inside] = 100.0 * (sig[inside, 1] - sig[inside, 0]) / sig[inside, 1]
    sig = sig.reshape(shp + (3,))
    sigma = scan.sigma_of(sig[..., 1], mask)
    acq = {}
    for i, (key, role, mt) in enumerate(zip(MTS_KEYS, ("MT-weighted", "PD-weighted", "T1-weighted"), (True, False, False))):
        data = sig[..., i].astype(np.float32)
        acq[key] = _vol(data if sigma == 0 else _rician(data, sigma, noise_rng), aff, "a.u.", f"{role} SPGR (MTS)",
                        FlipAngle=MTS_FLIPS[i], RepetitionTimeExcitation=MTS_TRS[i], RepetitionTime=MTS_TRS[i],
                        MTState=mt, EchoTime=0.0025, MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D")
    truth = {
        "mtsat": _vol((mtsat.reshape(shp) * mask).astype(np.float32), aff, "p.u.",
                      "MT saturation at the nominal transmit field (Helms' single-pool equation, true T1)"),
        "mtr": _vol((mtr.reshape(shp) * mask).astype(np.float32), aff, "%",
                    "MT ratio 100 (PDw - MTw)/PDw of the noise-free signals at the actual transmit field"),
        "t1": _vol(np.where(mask, t1.reshape(shp), 0).astype(np.float32), aff, "s", "T1 (the phantom's water T1)"),
        "bpf": _vol((bpf.reshape(shp) * mask).astype(np.float32), aff, "ratio", "bound-pool size F = M0b / M0f"),
        "b1": _vol(b1.reshape(shp).astype(np.float32), aff, "ratio", "true transmit field ratio"),
        **common,
    }
    return acq, truth

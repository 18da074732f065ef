r"""2D multi-echo spin echo (CPMG): slice profiles, finite TR, log-normal T2 pools, optional exchange.

Signal of a voxel (echo ``n`` at ``t_n = n ESP``)::

    S_n = S0 B_rx sum_classes f_c pd_c sum_pools w_pool sum_j w_j  E_n(T2_j, T1_pool, B1)

* classes and pools from :mod:`.tissue`; each pool's T2 is log-normal (median, SD of ln T2),
  integrated by 5 Gauss-Hermite nodes ``T2_j``;
* ``E_n`` is the slice-integrated, steady-state echo of one isochromat family: the EPG of
  :func:`.epg.cpmg_echoes` (finite ``TR``: the train starts from the longitudinal fixed point, see
  there) at every position ``z`` across the slice, with the effective excitation and refocusing angles
  of Hann-windowed sinc pulses scaled by ``B1`` (:mod:`.pulses`), summed over ``z`` (``int dz``, in
  slice thicknesses; an ideal rectangular slice has weight 1);
* without exchange (default) the myelin and IE pools of a class relax longitudinally with the class's
  fast-exchange T1 (the residence time of myelin water, 0.15-0.35 s, is short compared with the
  ~0.9 s recovery, so their longitudinal magnetisations recover nearly together), transversally with
  their own T2; CSF with its own T1;
* with ``exchange=True`` the myelin and IE pools of each tissue class are two sites with their own
  T1 and T2 exchanging with the subject's residence time (EPG-X, Malik et al. 2018) through the
  whole TR; each pool is then at its median T2 (the width of an exchanging site is not defined),
  and lesions take the IE T1 of a mid-severity lesion.

``E_n`` is tabulated once per protocol on ``ln T2 x ln T1 x B1`` (exchange: per class on
``f_m x ln T2_IE x B1``) and interpolated linearly; what is tabulated is ``ln(E_n / exp(-t_n/T2))``
(the stimulated-echo and saturation correction, smooth in T2), so the exponential itself is exact.

The truth MWF is the myelin water over all the water of the voxel (proton-density weighted, no T1
or T2 weighting): what a myelin-water estimator should recover.

References
----------
Lebel RM, Wilman AH. Transverse relaxometry with stimulated echo compensation. Magn Reson Med
64:1005-1014 (2010).  Whittall KP et al. Magn Reson Med 37:34-43 (1997).
Malik SJ et al. Magn Reson Med 80:767-779 (2018).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from napari_myelin.sims.independent.constants import (MESE_ECHOES, MESE_ESP, MESE_REF_SLICE_RATIO, MESE_TBW_EXC,
                                                      MESE_TBW_REF, MESE_TR)
from napari_myelin.sims.independent.epg import Pools, cpmg_echoes, two_site_exchange
from napari_myelin.sims.independent.pulses import excitation_angle, refocusing_angle, slice_nodes
from napari_myelin.sims.independent.tissue import CSF, GM, LESION, NAWM, lognormal_nodes, water

#: Table axes: T2 and T1 (s; the class T1s of the default model lie in 0.6-2.4 s, CSF in 4.1-4.5 s),
#: B1, and the slice positions |z| <= 1 excitation slice thickness (the excitation is below 1 deg
#: beyond), 16 midpoints. Measured against direct evaluation with 64 slice positions: WM voxels
#: (myelin and IE pools with their widths) within 0.4 % of the first echo (the T2, T1 and B1 axes
#: contribute alike; the slice quadrature 0.03 %).
T2_GRID = np.geomspace(0.004, 4.0, 28)
T1_GRID = np.geomspace(0.6, 5.0, 10)
B1_GRID = np.linspace(0.7, 1.3, 13)
FM_GRID = np.linspace(0.0, 0.32, 7)
T2IE_GRID = np.geomspace(0.04, 0.2, 7)
Z_NODES, Z_MAX = 16, 1.0


def slice_angles(b1, n_nodes: int = Z_NODES, ratio: float = MESE_REF_SLICE_RATIO) -> tuple:
    """Effective excitation and refocusing angles (deg) at ``(b1, z)`` and the slice weights (``z`` last).

    ``ratio``: thickness of the refocusing slab over the excitation slice.
    """
    z, w = slice_nodes(n_nodes, Z_MAX)
    b1 = np.asarray(b1, float)[..., None]
    exc = excitation_angle(90.0, MESE_TBW_EXC, b1, z)
    ref = refocusing_angle(180.0, MESE_TBW_REF, b1, z / ratio)
    return exc, ref, w


def slice_integrated_echoes(pools: Pools, exc_deg, ref_deg, weights, esp: float = MESE_ESP,
                            n_echoes: int = MESE_ECHOES, tr: float | None = MESE_TR) -> np.ndarray:
    """``sum_z w_z Re E_n(z)``: steady-state CPMG echoes integrated over slice positions (the last axis
    of ``exc_deg``/``ref_deg``, weights ``weights``), shape ``chains + (n_echoes,)``.

    The pools must broadcast with a trailing singleton axis for ``z``. With angles constant along
    ``z`` and weights summing to 1 this is the ideal (flat-profile) EPG.
    """
    echoes = cpmg_echoes(pools, exc_deg, ref_deg, esp, n_echoes, tr)
    return np.einsum("...zn,z->...n", echoes.real, np.asarray(weights, float))


def _log_correction(signal: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``ln(signal / reference)`` with the signal floored at a tiny positive value."""
    return np.log(np.maximum(signal, 1e-300)) - np.log(np.maximum(reference, 1e-300))


@functools.lru_cache(maxsize=2)
def decay_table(ratio: float = MESE_REF_SLICE_RATIO) -> RegularGridInterpolator:
    """``ln(E_n / exp(-t_n/T2))`` on ``(ln T2, ln T1, B1)`` for the protocol of :mod:`.constants`
    (refocusing slab ``ratio`` times the slice)."""
    exc, ref, w = slice_angles(B1_GRID, ratio=ratio)
    t2 = T2_GRID[:, None, None, None, None]
    pools = Pools(np.ones((1, 1, 1, 1, 1)), 1.0 / T1_GRID[None, :, None, None, None], 1.0 / t2)
    s = slice_integrated_echoes(pools, exc, ref, w)
    t = MESE_ESP * np.arange(1, MESE_ECHOES + 1)
    values = _log_correction(s, np.exp(-t / T2_GRID[:, None, None, None]))
    return RegularGridInterpolator((np.log(T2_GRID), np.log(T1_GRID), B1_GRID), values)


@functools.lru_cache(maxsize=8)
def exchange_table(t2_my: float, t1_my: float, t1_ie: float, tau: float) -> RegularGridInterpolator:
    """``ln(E_n / (f e^{-t/T2m} + (1-f) e^{-t/T2ie}))`` of two exchanging sites on ``(f_m, ln T2_IE, B1)``."""
    exc, ref, w = slice_angles(B1_GRID)
    f = FM_GRID[:, None, None, None]  # chains (f_m, T2_IE, B1, z)
    t2ie = T2IE_GRID[None, :, None, None]
    m_eq = np.stack([f, 1 - f], axis=-1)
    r2 = np.stack(np.broadcast_arrays(np.full_like(t2ie, 1 / t2_my), 1 / t2ie), axis=-1)
    pools = Pools(m_eq, np.array([1 / t1_my, 1 / t1_ie]), r2, two_site_exchange(f, tau))
    s = slice_integrated_echoes(pools, exc, ref, w)
    t = MESE_ESP * np.arange(1, MESE_ECHOES + 1)
    fr, t2r = FM_GRID[:, None, None, None], T2IE_GRID[None, :, None, None]
    reference = fr * np.exp(-t / t2_my) + (1 - fr) * np.exp(-t / t2r)
    return RegularGridInterpolator((FM_GRID, np.log(T2IE_GRID), B1_GRID), _log_correction(s, reference))


def _components(cl: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, T2 and T1 (N, C) of every component: 3 tissue classes x 2 pools x nodes, then CSF nodes."""
    w_cls = water(cl)
    weights, t2s, t1s = [], [], []
    for c in (NAWM, LESION, GM):
        for frac, med, sig in ((cl["mwf"][:, c], cl["t2_my"], cl["sigma_my"]),
                               (1 - cl["mwf"][:, c], cl["t2_ie"][:, c], cl["sigma_ie"])):
            nodes, wn = lognormal_nodes(np.broadcast_to(med, frac.shape), np.broadcast_to(sig, frac.shape))
            weights.append((w_cls[:, c] * frac)[:, None] * wn)
            t2s.append(nodes)
            t1s.append(np.repeat(cl["t1_fast"][:, c:c + 1], nodes.shape[1], axis=1))
    nodes, wn = lognormal_nodes(cl["t2_ie"][:, CSF], np.broadcast_to(cl["sigma_csf"], cl["t2_ie"][:, CSF].shape))
    weights.append(w_cls[:, CSF:CSF + 1] * wn)
    t2s.append(nodes)
    t1s.append(np.repeat(cl["t1_ie"][:, CSF:CSF + 1], nodes.shape[1], axis=1))
    return np.concatenate(weights, 1), np.concatenate(t2s, 1), np.concatenate(t1s, 1)


def _clip_b1(b1: np.ndarray) -> np.ndarray:
    return np.clip(b1, B1_GRID[0], B1_GRID[-1])


def decay_signal(cl: dict, b1: np.ndarray, ratio: float = MESE_REF_SLICE_RATIO, chunk: int = 4000) -> np.ndarray:
    """Noise-free echo trains (N, n_echoes), relative to a voxel of pure water at full recovery,
    without exchange (module docstring); ``ratio``: refocusing slab over slice thickness."""
    table = decay_table(float(ratio))
    t = MESE_ESP * np.arange(1, MESE_ECHOES + 1)
    weights, t2, t1 = _components(cl)
    out = np.empty((weights.shape[0], t.size))
    for s in range(0, weights.shape[0], chunk):
        sl = slice(s, s + chunk)
        pts = np.stack(np.broadcast_arrays(np.log(np.clip(t2[sl], T2_GRID[0], T2_GRID[-1])),
                                           np.log(np.clip(t1[sl], T1_GRID[0], T1_GRID[-1])),
                                           _clip_b1(b1[sl])[:, None]), axis=-1)
        corr = table(pts.reshape(-1, 3)).reshape(pts.shape[:2] + (t.size,))
        out[sl] = np.einsum("nc,nce->ne", weights[sl], np.exp(-t / t2[sl][..., None] + corr))
    return out


def exchange_signal(cl: dict, b1: np.ndarray, tissue: dict) -> np.ndarray:
    """Noise-free echo trains (N, n_echoes) with two-site exchange in each tissue class (module docstring)."""
    t = MESE_ESP * np.arange(1, MESE_ECHOES + 1)
    w_cls = water(cl)
    mid_lesion = 1 + (tissue["lesion_t1_factor"] - 1) * 0.65
    t1_ie = {NAWM: tissue["t1_ie_wm"], LESION: tissue["t1_ie_wm"] * mid_lesion, GM: tissue["t1_ie_gm"]}
    out = np.zeros((w_cls.shape[0], t.size))
    for c in (NAWM, LESION, GM):
        table = exchange_table(cl["t2_my"], cl["t1_my"], t1_ie[c], tissue["tau_myelin"])
        f, t2ie = np.clip(cl["mwf"][:, c], 0, FM_GRID[-1]), cl["t2_ie"][:, c]
        pts = np.stack([f, np.log(np.clip(t2ie, T2IE_GRID[0], T2IE_GRID[-1])), _clip_b1(b1)], axis=-1)
        ref = f[:, None] * np.exp(-t / cl["t2_my"]) + (1 - f[:, None]) * np.exp(-t / t2ie[:, None])
        out += w_cls[:, c:c + 1] * ref * np.exp(table(pts))
    csf = {k: v for k, v in cl.items()}
    csf["f"] = cl["f"] * np.array([0, 0, 0, 1.0])
    return out + decay_signal(csf, b1)

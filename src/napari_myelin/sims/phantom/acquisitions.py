"""The five acquisitions of one subject, each on its own grid, with the truth maps on that grid.

:func:`_in_scanner` places the subject (pose, transmit field, receive phase, noise generator; all
drawn from the seed). Each acquisition then builds its grid around the head (voxel size and field of
view from :data:`.constants.SIZES`; the GRE slab is oblique, the DWI stored LAS), resamples the
model maps onto it through the pose, computes the signal (:mod:`.signals`), adds noise and returns
``(acquisition, truth maps)``:

* :func:`_b1_map`: the measured transmit field on its own coarse grid (1 % noise);
* :func:`_mese`: CPMG, three pools, refocusing angle 180 x B1;
* :func:`_dwi`: b = 0, 1000, 2000 s/mm^2 of the true DKI tensors;
* :func:`_gre`: magnitude and wrapped phase of the local field (computed on a grid twice as fine and
  averaged, no inverse crime), air-sphere background field and shim residual, receive phase;
* :func:`_spgr`: variable flip angle, two exchanging tissue pools + CSF, same B1.

Noise is Rician with sigma = mean brain signal of the reference volume / ``snr``; the noise draws come
from one generator in this order (B1, MESE, DWI, GRE, SPGR), so a seed gives one phantom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_myelin.io.volume import Volume
from napari_myelin.reconst.dipole import sphere_field
from napari_myelin.sims.phantom.constants import (AIR, B0_TESLA, CHI, DWI_BVALS, GAMMA_HZ_PER_T, GRE_DTE, GRE_FLIP,
                                                  GRE_TE1, GRE_TR, MESE_ECHOES, MESE_TE, S0_SCALE, SPGR_FLIPS,
                                                  SPGR_TR, T1, T2)
from napari_myelin.sims.phantom.geometry import Pose, _pose, _Sampler, acquisition_grid, fine_grid
from napari_myelin.sims.phantom.signals import (_rician, gradient_scheme, simulate_dwi, simulate_field,
                                                simulate_mese, simulate_spgr)
from napari_myelin.sims.phantom.truth import _common_truth, _dki_truth, _vol, _voxel_dki
from napari_myelin.utils.progress import step


# --------------------------------------------------------------------------------------------------
# the subject in the scanner
# --------------------------------------------------------------------------------------------------
@dataclass
class _Scan:
    """What every acquisition of one subject shares: its tissue model, pose, fields and noise."""

    model: dict
    pose: Pose
    centre: np.ndarray  # world mm, centre of every field of view
    b1_params: np.ndarray  # transmit field: centre (3) and tilt (3)
    phi0_params: np.ndarray  # receive phase: constant and gradient (4)
    snr: float
    noise_rng: np.random.Generator

    def grid(self, voxel_fov, rotation_deg=(0, 0, 0), flip_x=False) -> tuple[np.ndarray, tuple, _Sampler]:
        """Affine, shape and sampler of a grid ``(voxel_mm, fov_mm)`` centred on the head."""
        aff, shp = acquisition_grid(*voxel_fov, rotation_deg=rotation_deg, center=self.centre, flip_x=flip_x)
        return aff, shp, _Sampler(self.model, self.pose, aff, shp)

    def sigma_of(self, ref: np.ndarray, mask: np.ndarray) -> float:
        """Noise sigma: mean of the reference volume in the brain mask / SNR (0 for infinite SNR)."""
        return float(ref[mask].mean() / self.snr) if np.isfinite(self.snr) else 0.0

    def noisy(self, sig, sigma):
        """``sig`` as float32 with Rician noise of ``sigma`` (none if 0)."""
        return sig.astype(np.float32) if sigma == 0 else _rician(sig.astype(np.float32), sigma, self.noise_rng)


def _in_scanner(model: dict, rng: np.random.Generator, seed: int, snr: float) -> _Scan:
    """Draw the pose, transmit field and receive phase (from ``rng``, in this order); noise from ``[seed, 1]``."""
    pose = _pose(rng)
    b1_params = np.r_[rng.uniform(-10, 10, 3) + pose.translation, rng.uniform(-1, 1, 3)]
    phi0_params = rng.uniform(-1, 1, 4)
    noise_rng = np.random.default_rng([seed, 1])
    centre = pose.translation + np.array([0.0, -15.0, 10.0])
    return _Scan(model=model, pose=pose, centre=centre, b1_params=b1_params, phi0_params=phi0_params, snr=snr,
                 noise_rng=noise_rng)


def _b1_field(p_s: np.ndarray, rng_params: np.ndarray) -> np.ndarray:
    """Smooth transmit field ratio in 0.84-1.0 (refocusing 150-180 deg): centre-peaked, tilted."""
    c, tilt = rng_params[:3], rng_params[3:6]
    d = (p_s - c[:, None]) / np.array([[95.0], [110.0], [90.0]])
    r2 = (d ** 2).sum(axis=0)
    b1 = 1.0 - 0.10 * r2 + 0.03 * (tilt @ d)
    return np.clip(b1, 0.84, 1.0)


# --------------------------------------------------------------------------------------------------
# B1 map, MESE, DWI
# --------------------------------------------------------------------------------------------------
def _b1_map(scan: _Scan, grid) -> tuple[Volume, dict]:
    """Measured transmit field (true field + 1 % noise, in the brain) on its own coarse grid; its truth."""
    aff, shp, s = scan.grid(grid)
    b1_true = _b1_field(s.world, scan.b1_params).reshape(shp)
    b1_meas = (b1_true + 0.01 * scan.noise_rng.standard_normal(shp)) * (s.linear("brain") > 0.05)
    acq = _vol(b1_meas.astype(np.float32), aff, "ratio", "transmit B1 map (actual / nominal flip angle)",
               Modality="MR", MagneticFieldStrength=B0_TESLA)
    truth = {"b1": _vol(b1_true.astype(np.float32), aff, "ratio", "true transmit field ratio"),
             **{k: v for k, v in _common_truth(s, aff).items() if k == "mask"}}
    return acq, truth


def _mese(scan: _Scan, grid) -> tuple[Volume, dict]:
    """Multi-echo spin echo (CPMG, refocusing 180 x B1) and its truth (MWF, IE T2, angle, PD)."""
    aff, shp, s = scan.grid(grid)
    common = _common_truth(s, aff)
    inside = s.linear("brain").ravel() > 0.05
    b1 = _b1_field(s.world, scan.b1_params)
    pd = s.linear("pd").ravel()
    sig, t2ie = _mese_signal(s, inside, pd, 180.0 * b1[inside])
    sig = sig.reshape(shp + (MESE_ECHOES,))
    mask = common["mask"].data
    te = [round(MESE_TE * (i + 1), 6) for i in range(MESE_ECHOES)]
    acq = _vol(scan.noisy(sig, scan.sigma_of(sig[..., 0], mask)), aff, "a.u.", "multi-echo spin echo (CPMG)",
               EchoTime=te, EchoSpacing=MESE_TE, RefocusingFlipAngle=180.0, ExcitationFlipAngle=90.0,
               RepetitionTime=1.5, MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D",
               PulseSequenceType="Multi-echo spin echo (CPMG)")
    t2_full = np.zeros(pd.size, np.float32)
    t2_full[inside] = t2ie
    alpha_full = (180.0 * b1).astype(np.float32)
    truth = {
        "mwf": _vol((s.linear("mwf") * mask).astype(np.float32), aff, "fraction", "myelin water fraction"),
        "t2_ie": _vol(t2_full.reshape(shp) * mask, aff, "s", "T2 of intra/extra-cellular water"),
        "refocusing_angle": _vol(alpha_full.reshape(shp), aff, "deg", "actual refocusing angle (180 x B1)"),
        "pd": _vol((pd.reshape(shp) * mask).astype(np.float32), aff, "fraction", "proton density (water = 1)"),
        **common,
    }
    return acq, truth


def _mese_signal(s: _Sampler, inside: np.ndarray, pd: np.ndarray, alpha: np.ndarray):
    """Noise-free echo trains ``(N, echoes)`` (0 outside ``inside``) and the IE T2 used (quantised to 0.5 ms).

    Three pools (myelin, intra/extra-cellular, CSF); IE T1 quantised to 50 ms; ``alpha`` is the
    refocusing angle (deg) of the voxels ``inside``.
    """
    f = np.stack([s.linear(k).ravel() for k in ("mwf", "f_ie", "f_csf")], axis=1)[inside]
    t2ie = np.round(s.linear("t2_ie").ravel()[inside] / 0.0005) * 0.0005
    t2ie = np.where(t2ie > 0, t2ie, T2["ie_wm"])
    t1ie = np.round(s.linear("t1_ie").ravel()[inside] / 0.05) * 0.05
    t1ie = np.where(t1ie > 0, t1ie, T1["ie_wm"])
    n_in = int(inside.sum())
    t2 = np.stack([np.full(n_in, T2["my"]), t2ie, np.full(n_in, T2["csf"])], axis=1)
    t1 = np.stack([np.full(n_in, T1["my"]), t1ie, np.full(n_in, T1["csf"])], axis=1)
    sig = np.zeros((pd.size, MESE_ECHOES), np.float32)
    sig[inside] = S0_SCALE * pd[inside, None] * simulate_mese(f, t2, t1, alpha)
    return sig, t2ie


def _dwi(scan: _Scan, grid) -> tuple[Volume, dict]:
    """Multi-shell DWI (LAS, tilted 3 deg) of the true DKI tensors, S0 = non-myelin water; its DKI truth."""
    aff, shp, s = scan.grid(grid, rotation_deg=(3.0, 0, 0), flip_x=True)
    common = _common_truth(s, aff)
    mask = common["mask"].data
    inside = s.linear("brain").ravel() > 0.05
    bvals, bvecs = gradient_scheme()
    dki_vox, dki_maps = _voxel_dki(s, aff, scan.pose, inside, b_max=max(DWI_BVALS))
    params = np.zeros((inside.size, 27))
    params[inside] = dki_vox
    s0 = S0_SCALE * s.linear("pd").ravel() * (1 - s.linear("mwf").ravel())
    sig = np.zeros((inside.size, bvals.size), np.float32)
    sig[inside] = simulate_dwi(params[inside], bvals, bvecs, s0=s0[inside])
    sig = sig.reshape(shp + (bvals.size,))
    dwi = _vol(scan.noisy(sig, scan.sigma_of(sig[..., bvals == 0].mean(-1), mask)), aff, "a.u.",
               "multi-shell diffusion-weighted series", EchoTime=0.08, RepetitionTime=4.2,
               MagneticFieldStrength=B0_TESLA, PhaseEncodingDirection="j-")
    dwi.bvals, dwi.bvecs = bvals, bvecs
    truth = {**_dki_truth(dki_maps, inside, shp, aff, mask), **common}
    truth["dki_params"] = _vol(params.reshape(shp + (27,)).astype(np.float32), aff, "",
                               "true DKI parameters (dipy order: evals mm^2/s, evecs, kt)")
    return dwi, truth


# --------------------------------------------------------------------------------------------------
# multi-echo GRE
# --------------------------------------------------------------------------------------------------
def _gre(scan: _Scan, grid, n_echoes: int, progress=None, cancel=None) -> tuple[Volume, Volume, dict]:
    """Multi-echo GRE (oblique slab): magnitude, wrapped phase and the truth (chi, chi_para, chi_dia, fields, R2*)."""
    aff, shp, s = scan.grid(grid, rotation_deg=(12.0, 0, 4.0))
    common = _common_truth(s, aff)
    mask = common["mask"].data
    local = _local_field(scan, aff, shp)
    step(progress, cancel, 0.7, "background field")
    background = _background_field(scan, s.world).reshape(shp)
    total = local + background
    te = np.array([GRE_TE1 + i * GRE_DTE for i in range(n_echoes)])
    cplx = _gre_signal(scan, s, total, te, mask)
    meta = dict(EchoTime=te.round(6).tolist(), MagneticFieldStrength=B0_TESLA, FlipAngle=GRE_FLIP,
                RepetitionTime=GRE_TR, MRAcquisitionType="3D", ImagingFrequency=round(GAMMA_HZ_PER_T * B0_TESLA / 1e6, 4))
    mag = _vol(np.abs(cplx).astype(np.float32), aff, "a.u.", "multi-echo GRE magnitude", **meta)
    phase = _vol(np.angle(cplx).astype(np.float32), aff, "rad", "multi-echo GRE phase (wrapped)", **meta)
    truth = {
        "chi": _vol((s.linear("chi") * mask).astype(np.float32), aff, "ppm", "magnetic susceptibility (CSF = 0)"),
        "local_field": _vol((local * mask).astype(np.float32), aff, "ppm", "field of the brain's susceptibility"),
        "background_field": _vol(background.astype(np.float32), aff, "ppm", "field of outside sources + shim residual"),
        "total_field": _vol(total.astype(np.float32), aff, "ppm", "local + background field"),
        "r2s": _vol((s.linear("r2s") * mask).astype(np.float32), aff, "1/s", "R2*"),
        "chi_para": _vol((s.linear("chi_para") * mask).astype(np.float32), aff, "ppm",
                         "paramagnetic susceptibility (GM, deep-GM iron, veins; >= 0)"),
        "chi_dia": _vol((s.linear("chi_dia") * mask).astype(np.float32), aff, "ppm",
                        "diamagnetic susceptibility magnitude (myelin; >= 0, chi = chi_para - chi_dia)"),
        **common,
    }
    return mag, phase, truth


def _local_field(scan: _Scan, affine: np.ndarray, shape) -> np.ndarray:
    """Field (ppm) of the brain's susceptibility, computed on a grid twice as fine and block-averaged."""
    faff, fshp = fine_grid(affine, shape, 2)
    sf = _Sampler(scan.model, scan.pose, faff, fshp)
    return simulate_field(sf.linear("chi"), faff, 2)


def _background_field(scan: _Scan, world: np.ndarray) -> np.ndarray:
    """Field (ppm) at ``world`` (3, N) of the air cavities (B0 along world z) plus a linear shim residual."""
    background = np.zeros(world.shape[1])
    for c_t, r in AIR:
        c_s = scan.pose.to_scanner(np.asarray(c_t, float))[:, 0]
        background += sphere_field((world - c_s[:, None]).T, r * scan.pose.scale, CHI["air"], (0.0, 0.0, 1.0))
    rel = (world - scan.centre[:, None]) / 100.0
    background += 0.30 * rel[0] - 0.20 * rel[1] + 0.25 * rel[2]  # shim residual (ppm per 100 mm)
    return background


def _gre_signal(scan: _Scan, s: _Sampler, total: np.ndarray, te: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Complex echoes ``pd exp(-R2* TE) exp(i (2 pi gamma B0 field TE + phi0))`` + complex Gaussian noise."""
    freq = GAMMA_HZ_PER_T * B0_TESLA * 1e-6  # Hz per ppm
    rel = (s.world - scan.centre[:, None]) / 100.0
    phi0 = (0.4 * scan.phi0_params[0] + 0.3 * (scan.phi0_params[1:] @ rel)).reshape(s.shape)
    mag = S0_SCALE * s.linear("pd")[..., None] * np.exp(-s.linear("r2s")[..., None] * te)
    inside = s.linear("brain") > 0.05
    mag *= inside[..., None]
    phase = 2 * np.pi * freq * total[..., None] * te + phi0[..., None]
    sigma = scan.sigma_of(mag[..., 0], mask)
    cplx = (mag * np.exp(1j * phase)).astype(np.complex64)
    if sigma > 0:
        cplx.real += sigma * scan.noise_rng.standard_normal(cplx.shape, dtype=np.float32)
        cplx.imag += sigma * scan.noise_rng.standard_normal(cplx.shape, dtype=np.float32)
    return cplx


# --------------------------------------------------------------------------------------------------
# SPGR
# --------------------------------------------------------------------------------------------------
def _spgr(scan: _Scan, grid) -> tuple[Volume, dict]:
    """Variable-flip-angle SPGR (tilted 4 deg) with the same B1; its truth (T1, PD, MWF, B1)."""
    aff, shp, s = scan.grid(grid, rotation_deg=(0, -4.0, 0))
    common = _common_truth(s, aff)
    mask = common["mask"].data
    b1 = _b1_field(s.world, scan.b1_params).reshape(shp)
    pd = s.linear("pd")
    f_csf = s.linear("f_csf")
    t1ie = s.linear("t1_ie")
    t1ie = np.where(t1ie > 0, t1ie, T1["ie_wm"])
    sig = S0_SCALE * simulate_spgr(pd * (1 - f_csf), s.linear("tissue_mwf"), t1ie, pd * f_csf, SPGR_FLIPS, SPGR_TR, b1)
    sig *= (s.linear("brain") > 0.05)[..., None]
    acq = _vol(scan.noisy(sig, scan.sigma_of(sig.max(-1), mask)), aff, "a.u.", "variable-flip-angle SPGR",
               FlipAngle=list(SPGR_FLIPS), RepetitionTime=SPGR_TR, EchoTime=0.0025,
               MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D")
    t1_true = s.linear("t1")
    truth = {
        "t1": _vol((np.where(mask, t1_true, 0)).astype(np.float32), aff, "s",
                   "T1 (fast-exchange, water-weighted R1 of the pools)"),
        "pd": _vol((pd * mask).astype(np.float32), aff, "fraction", "proton density (water = 1)"),
        "mwf": _vol((s.linear("mwf") * mask).astype(np.float32), aff, "fraction", "myelin water fraction"),
        "b1": _vol(b1.astype(np.float32), aff, "ratio", "true transmit field ratio"),
        **common,
    }
    return acq, truth

"""The B1 map, multi-echo spin echo, diffusion and SPGR acquisitions of a session, with their truth.

Each function builds the acquisition's grid (:meth:`.Session.grid`), samples the tissue classes onto
it (:func:`.tissue.classes_on_grid`), computes the noise-free signal of the inside voxels with the
modality's physics (:mod:`.mese`, :mod:`.dwi`, :mod:`.spgr`), applies the session's transmit and
receive fields (:mod:`.fields`), adds Rician noise of ``sigma = mean brain signal of the reference
volume / SNR`` from the modality's own generator, and returns ``(acquisition, truth maps)``. The
multi-echo GRE is :func:`.gre.acquire_gre`; the MT-weighted trio :func:`acquire_mts` (:mod:`.mt`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_myelin.sims.independent import dwi, mese, mt, spgr
from napari_myelin.sims.independent.constants import (B0_TESLA, D_FREE, DWI_TE, DWI_TR, MESE_ECHOES, MESE_ESP,
                                                      MESE_REF_SLICE_RATIO, MESE_TBW_EXC, MESE_TBW_REF, MESE_TR,
                                                      MT_PULSE, MTS_FLIPS, MTS_TE, MTS_TRS, S0_SCALE, SIZES,
                                                      SPGR_FLIPS, SPGR_TE, SPGR_TR)
from napari_myelin.sims.independent.fields import measured_b1, noise_sigma, rician
from napari_myelin.sims.independent.session import Session, volume
from napari_myelin.sims.independent.tissue import (CSF, GM, LESION, NAWM, classes_on_grid, spin_echo_r2, t2_weight,
                                                   true_mwf, water)


def _fill(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Grid array (``inside.shape + values.shape[1:]``) with ``values`` at the inside voxels, 0 elsewhere."""
    out = np.zeros((inside.size,) + values.shape[1:], np.float32)
    out[inside.ravel()] = values
    return out.reshape(inside.shape + values.shape[1:])


def _receive(se: Session, s, mask: np.ndarray) -> np.ndarray:
    """Receive sensitivity on the grid of ``s``, normalised to a mean of 1 in ``mask``."""
    rx = se.fields.receive(s.world).reshape(s.shape)
    return rx / rx[mask].mean()


def _on_grid(se: Session, key: str) -> tuple:
    """What an acquisition on the grid ``key`` starts from: ``aff, shape, sampling, classes, inside, common truth,
    mask, b1`` (the tissue classes on the grid, the common truth maps, their brain mask and the transmit field)."""
    aff, shp, s = se.grid(key)
    cl = classes_on_grid(se.anatomy, s, se.tissue)
    common = se.common_truth(s, aff)
    return aff, shp, s, cl, cl["inside"], common, common["mask"].data, se.fields.transmit(s.world)


def acquire_b1(se: Session) -> tuple:
    """Measured transmit map on its own coarse grid (blurred, 2 % noise, over the head) and its truth."""
    aff, shp, s = se.grid("b1", supersample=1)
    voxel = SIZES[se.size]["b1"][0]
    head = ndi.binary_dilation(s.mean(se.anatomy["brain"]) > 0.05, iterations=int(np.ceil(10.0 / min(voxel))))
    measured, true = measured_b1(se.fields, s.world, shp, voxel, head, se.noise["b1"])
    common = se.common_truth(s, aff)
    acq = volume(measured, aff, "ratio", "transmit B1 map (actual / nominal flip angle)", Modality="MR",
                 MagneticFieldStrength=B0_TESLA)
    return acq, {"b1": volume(true, aff, "ratio", "true transmit field ratio"), "mask": common["mask"]}


def acquire_mese(se: Session, exchange: bool = False, refocusing_ratio: float = MESE_REF_SLICE_RATIO) -> tuple:
    """2D CPMG multi-echo spin echo (slice profiles, finite TR) and its truth (MWF, PD, refocusing angle).

    ``refocusing_ratio``: refocusing slab over excitation slice (the exchange model uses the default).
    """
    aff, shp, s, cl, inside, common, mask, b1 = _on_grid(se, "mese")
    sig = mese.exchange_signal(cl, b1[inside.ravel()], se.tissue) if exchange else mese.decay_signal(
        cl, b1[inside.ravel()], refocusing_ratio)
    sig = _fill(sig, inside) * (S0_SCALE * _receive(se, s, mask))[..., None]
    te = [round(MESE_ESP * (i + 1), 6) for i in range(MESE_ECHOES)]
    acq = volume(rician(sig, noise_sigma(sig[..., 0], mask, se.snr["mese"]), se.noise["mese"]), aff, "a.u.",
                 "2D multi-echo spin echo (CPMG)", EchoTime=te, EchoSpacing=MESE_ESP, RefocusingFlipAngle=180.0,
                 ExcitationFlipAngle=90.0, RepetitionTime=MESE_TR, MRAcquisitionType="2D",
                 SliceThickness=float(SIZES[se.size]["mese"][0][2]), MagneticFieldStrength=B0_TESLA,
                 PulseSequenceType="Multi-echo spin echo (CPMG)", ExcitationTimeBandwidth=MESE_TBW_EXC,
                 RefocusingTimeBandwidth=MESE_TBW_REF, RefocusingSlabRatio=float(refocusing_ratio))
    truth = {
        "mwf": volume(_fill(true_mwf(cl), inside) * mask, aff, "fraction", "myelin water / all water"),
        "pd": volume(_fill(water(cl).sum(1), inside) * mask, aff, "fraction", "water content (pure water = 1)"),
        "refocusing_angle": volume((180.0 * b1).reshape(shp).astype(np.float32), aff, "deg",
                                   "refocusing angle at the slice centre (180 x B1)"),
        "r2": volume(_fill(spin_echo_r2(cl), inside) * mask, aff, "1/s",
                     "spin-echo R2 of the voxel's water: inverse geometric-mean T2 of its T2 pools"),
        **common,
    }
    return acq, truth


def _kappa(odi) -> np.ndarray:
    """Watson concentration of an orientation dispersion index: ``1 / tan(pi ODI / 2)`` (Zhang 2012)."""
    return 1.0 / np.tan(np.pi * np.clip(odi, 1e-3, 0.999) / 2.0)


#: Compartments sharing an axis and a dispersion: the stick and zeppelin of each class, free water.
COMPARTMENT_GROUPS = np.array([0, 0, 1, 1, 2, 2, 3])


def dwi_compartments(se: Session, s, cl: dict, aff: np.ndarray) -> tuple:
    """Signal weights (N,) and compartments (fractions, D_par, D_perp, kappa (N, 7), axes (N, 7, 3)).

    Order: NAWM stick, zeppelin; lesion stick, zeppelin; GM stick, zeppelin; free water (:mod:`.dwi`).
    """
    pick, tis = cl["inside"].ravel(), se.tissue
    sev = cl["severity"]
    w_cls = water(cl) * (1 - cl["mwf"]) * np.stack(
        [t2_weight(cl["t2_ie"][:, c], cl["sigma_ie"] if c != CSF else cl["sigma_csf"], DWI_TE) for c in range(4)], 1)
    w_cls *= 1 - np.exp(-DWI_TR / np.where(np.arange(4) == CSF, cl["t1_ie"], cl["t1_fast"]))
    f_ax = s.mean(se.anatomy["f_axon"]).ravel()[pick]
    k_wm = _kappa(s.mean(se.anatomy["odi_wm"]).ravel()[pick])
    ones = np.ones_like(sev)
    d_a, d_e, d_eg, fn = tis["d_axon"], tis["d_extra_par"], tis["d_extra_par_gm"], tis["f_neurite_gm"]
    f_les, k_les, d_les = f_ax * (1 - sev / 2), k_wm * (1 - sev / 2), d_e * (1 + sev / 4)
    share = np.stack([f_ax, 1 - f_ax, f_les, 1 - f_les, fn * ones, (1 - fn) * ones, ones], 1)
    owner = np.array([NAWM, NAWM, LESION, LESION, GM, GM, CSF])
    frac = w_cls[:, owner] * share
    total = frac.sum(1)
    frac /= np.where(total > 0, total, 1.0)[:, None]
    d_par = np.stack([d_a * ones, d_e * ones, d_a * ones, d_les, d_a * ones, d_eg * ones, D_FREE * ones], 1)
    d_perp = np.stack([0 * ones, d_e * (1 - f_ax), 0 * ones, d_les * (1 - f_les), 0 * ones,
                       d_eg * (1 - fn) * ones, D_FREE * ones], 1)
    k_gm = _kappa(tis["odi_gm"]) * ones
    kappa = np.stack([k_wm, k_wm, k_les, k_les, k_gm, k_gm, 0 * ones], 1)
    fib = se.directions(s, aff, "fibre").reshape(-1, 3)[pick]
    rad = se.directions(s, aff, "radial").reshape(-1, 3)[pick]
    mu = np.stack([fib, fib, fib, fib, rad, rad, rad], 1)
    return total, frac, d_par, d_perp, kappa, mu


def acquire_dwi(se: Session) -> tuple:
    """Multi-shell DWI (LAS, tilted) of the compartment model and its cumulant truth (FA, MD, MK, ...)."""
    aff, shp, s = se.grid("dwi")
    cl = classes_on_grid(se.anatomy, s, se.tissue)
    common = se.common_truth(s, aff)
    mask = common["mask"].data
    bvals, g_world = dwi.gradient_scheme()
    axes = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
    bvecs = g_world @ axes  # the .bvec convention of the project: directions in the image's voxel axes
    total, frac, d_par, d_perp, kappa, mu = dwi_compartments(se, s, cl, aff)
    sig = dwi.mixture_signal(frac, d_par, d_perp, kappa, mu, bvals, bvecs, groups=COMPARTMENT_GROUPS) * total[:, None]
    sig = _fill(sig, cl["inside"]) * (S0_SCALE * _receive(se, s, mask))[..., None]
    noisy = rician(sig, noise_sigma(sig[..., bvals == 0].mean(-1), mask, se.snr["dwi"]), se.noise["dwi"])
    acq = volume(noisy, aff, "a.u.", "multi-shell diffusion-weighted series", EchoTime=DWI_TE,
                 RepetitionTime=DWI_TR, MagneticFieldStrength=B0_TESLA, PhaseEncodingDirection="j-")
    acq.bvals, acq.bvecs = bvals, bvecs
    in_mask = mask.ravel()[cl["inside"].ravel()]
    metrics = dwi.cumulant_truth(frac[in_mask], d_par[in_mask], d_perp[in_mask], kappa[in_mask], mu[in_mask],
                                 groups=COMPARTMENT_GROUPS)
    units = {"fa": "fraction", "md": "mm^2/s", "ad": "mm^2/s", "rd": "mm^2/s", "mk": "", "ak": "", "rk": "",
             "mkt": ""}
    truth = {k: volume(_fill(metrics[k], mask), aff, units[k],
                       f"{k.upper()} of the cumulant expansion of the compartment mixture (b -> 0)") for k in units}
    return acq, {**truth, **common}


def acquire_spgr(se: Session, spoiling: str = "ideal") -> tuple:
    """Variable-flip-angle SPGR (Bloch-McConnell pools, receive bias, B1) and its truth (T1, PD, MWF, B1)."""
    aff, shp, s, cl, inside, common, mask, b1 = _on_grid(se, "spgr")
    sig = spgr.class_signals(cl, se.tissue, b1[inside.ravel()], spoiling=spoiling)
    sig = _fill(sig, inside) * (S0_SCALE * _receive(se, s, mask))[..., None]
    noisy = rician(sig, noise_sigma(sig.max(-1), mask, se.snr["spgr"]), se.noise["spgr"])
    acq = volume(noisy, aff, "a.u.", "variable-flip-angle SPGR", FlipAngle=list(SPGR_FLIPS), RepetitionTime=SPGR_TR,
                 EchoTime=SPGR_TE, MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D",
                 Spoiling=spoiling)
    w = water(cl)
    r1 = (w * (cl["mwf"] / cl["t1_my"] + (1 - cl["mwf"]) / cl["t1_ie"])).sum(1) / np.maximum(w.sum(1), 1e-12)
    truth = {
        "t1": volume(_fill(1.0 / np.maximum(r1, 1e-6), inside) * mask, aff, "s",
                     "T1 of the voxel's water in the fast-exchange limit (water-weighted R1)"),
        "pd": volume(_fill(w.sum(1), inside) * mask, aff, "fraction", "water content (pure water = 1)"),
        "mwf": volume(_fill(true_mwf(cl), inside) * mask, aff, "fraction", "myelin water / all water"),
        "b1": volume(b1.reshape(shp).astype(np.float32), aff, "ratio", "true transmit field ratio"),
        **common,
    }
    return acq, truth


#: Acquisition keys of the MTS trio (MTw, PDw, T1w), as the project phantom's.
MTS_KEYS = ("mts_mtw", "mts_pdw", "mts_t1w")


def acquire_mts(se: Session) -> tuple:
    """MT-, PD- and T1-weighted SPGR (:mod:`.mt`) on their own grid and their truth (MTsat, MTR, T1, F, B1).

    The magnitudes are scaled to a mean PDw brain signal of 1000 and get Rician noise of
    ``sigma = 1000 / SNR`` (the SPGR SNR) from the session's ``mts`` stream (MTw, PDw, T1w in turn).
    Sidecars: ``FlipAngle``, ``RepetitionTimeExcitation`` and ``RepetitionTime`` (s), ``MTState`` and the
    MT pulse, as BIDS MTS.
    """
    aff, shp, s, cl, inside, common, mask, b1 = _on_grid(se, "mts")
    b1 = b1[inside.ravel()]
    clean = mt.mts_signals(cl, se.tissue, b1)
    truth_v = mt.mts_truth(cl, se.tissue, b1, clean)
    sig = _fill(clean, inside) * _receive(se, s, mask)[..., None]
    sig *= S0_SCALE / sig[..., 1][mask].mean()
    sigma = noise_sigma(sig[..., 1], mask, se.snr["spgr"])
    acq = {}
    roles = ("MT-weighted", "PD-weighted", "T1-weighted")
    for i, key in enumerate(MTS_KEYS):
        pulse = {"MTPulseShape": "Gaussian", "MTPulseDuration": MT_PULSE["duration_s"],
                 "MTOffsetFrequency": MT_PULSE["offset_hz"], "MTNumberOfPulses": 1,
                 "MTPulseFlipAngle": MT_PULSE["flip_deg"]} if i == 0 else {}
        acq[key] = volume(rician(sig[..., i], sigma, se.noise["mts"]), aff, "a.u.", f"{roles[i]} SPGR (MTS)",
                          FlipAngle=MTS_FLIPS[i], RepetitionTimeExcitation=MTS_TRS[i], RepetitionTime=MTS_TRS[i],
                          MTState=i == 0, EchoTime=MTS_TE, MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D",
                          **pulse)
    desc = {"mtsat": ("p.u.", "MT saturation at the nominal transmit field (Helms' exact single-pool equation "
                              "for the noise-free MTw signal at B1 = 1, true T1, amplitude of the noise-free PDw)"),
            "mtr": ("%", "MT ratio 100 (PDw - MTw)/PDw of the noise-free signals at the actual transmit field"),
            "t1": ("s", "T1 of the voxel's water (water-weighted R1, as the SPGR truth)"),
            "bpf": ("ratio", "bound-pool size F = M0b / M0f (water-weighted over the voxel's classes)")}
    truth = {k: volume(_fill(truth_v[k], inside) * mask, aff, u, d) for k, (u, d) in desc.items()}
    truth["mwf"] = volume(_fill(true_mwf(cl), inside) * mask, aff, "fraction", "myelin water / all water")
    truth["b1"] = volume(se.fields.transmit(s.world).reshape(shp).astype(np.float32), aff, "ratio",
                         "true transmit field ratio")
    return acq, {**truth, **common}

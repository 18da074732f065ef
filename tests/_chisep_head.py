"""A chi-separation head simulated with QSM-CI's ``qsm-forward`` (GPL-3; tests and benchmarks only).

qsm-forward's own head model needs downloaded head data, which tests may not fetch; its chi-separation
*signal model* works on any arrays. The head is therefore built from this package's shipped atlas (the
phantom's seed-independent anatomy on its 2 mm model grid: MNI tissue fractions, the deep-grey-matter
ellipsoids and the veins), and every voxel is a mixture of qsm-forward's tissue classes with the per-tissue
chi+ / chi- of its ``CHISEP_TISSUE_PARAMS`` (the Susceptibility-Separation-Phantom values, Ridani et al.
2026): white matter, cortical grey matter, CSF, venous blood and the seven deep nuclei. qsm-forward then
simulates everything the estimator sees:

* the local field, ``qsm_forward.generate_field(chi+ + chi-)`` (its own dipole kernel, 2x padding, mean
  removed in the brain);
* the multi-echo GRE, ``qsm_forward.generate_signal`` in its chi-separation mode,
  ``|S| ~ exp(-TE (R2 + Dr |chi+| + Dr |chi-|))`` with ``Dr = qsm_forward.DR_KERNEL`` (137 Hz/ppm, Shin et
  al. 2021), 3 T, 6 echoes 4-34 ms;
* a multi-echo spin echo, ``qsm_forward.generate_se_signal`` (R2 only), 8 echoes 12-96 ms;
* complex Gaussian noise, ``qsm_forward.add_noise`` (peak SNR 200).

R2, R1 and M0 per tissue are typical 3 T values (only their consistency between the two series matters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Tissue classes of qsm-forward's segmentation used here (label -> name).
LABELS = {1: "caudate", 2: "globus_pallidus", 3: "putamen", 4: "red_nucleus", 5: "dentate",
          6: "substantia_nigra", 7: "thalamus", 8: "white_matter", 9: "grey_matter", 10: "csf", 11: "blood"}
#: Iron-rich nuclei (qsm-forward chi+ >= 0.11 ppm).
IRON_NUCLEI = (2, 4, 5, 6)
#: T2 (s), T1 (s) and water density per tissue label at 3 T.
_T2 = {1: 0.070, 2: 0.050, 3: 0.060, 4: 0.055, 5: 0.065, 6: 0.055, 7: 0.070, 8: 0.070, 9: 0.085, 10: 2.0, 11: 0.1}
_T1 = {1: 1.4, 2: 1.1, 3: 1.3, 4: 1.1, 5: 1.1, 6: 1.1, 7: 1.2, 8: 0.85, 9: 1.4, 10: 4.0, 11: 1.6}
_M0 = {**{k: 0.8 for k in _T2}, 8: 0.7, 10: 1.0}


@dataclass
class ChiSepHead:
    magnitude: np.ndarray  # (X, Y, Z, 6) GRE magnitude
    phase: np.ndarray  # (X, Y, Z, 6) GRE phase (rad)
    echo_times: np.ndarray  # GRE TEs (s)
    spin_echo: np.ndarray  # (X, Y, Z, 8) spin-echo magnitude
    spin_echo_times: np.ndarray  # SE TEs (s)
    chi_para: np.ndarray  # truth, ppm >= 0
    chi_dia: np.ndarray  # truth, ppm >= 0 (the magnitude of qsm-forward's chi_neg)
    r2: np.ndarray  # truth R2 (1/s)
    local_field: np.ndarray  # qsm-forward's field (ppm), mean 0 in the mask
    mask: np.ndarray  # brain
    labels: np.ndarray  # voxels > 90 % of one tissue class, else 0
    affine: np.ndarray


def _fractions(an) -> dict[int, np.ndarray]:
    """Tissue-class fractions (sum 1 in the brain): nuclei and veins first, the rest WM/GM/CSF."""
    from napari_myelin.sims.phantom.anatomy import _ellipsoid
    from napari_myelin.sims.phantom.constants import DEEP_GM

    shape, world = an["shape"], an["world"]
    names = {v: k for k, v in LABELS.items()}
    frac, taken = {}, np.zeros(shape)
    for name, centre, semi, _chi in DEEP_GM:
        e = np.zeros(shape)
        for side in (-1, 1):
            e = np.maximum(e, _ellipsoid(world, (side * centre[0], centre[1], centre[2]), semi).reshape(shape))
        frac[names[name]] = np.minimum(e, 1 - taken)
        taken += frac[names[name]]
    frac[11] = an["vein"] * (1 - taken)
    rest = np.clip(1 - taken - frac[11], 0, 1)
    frac[8], frac[9], frac[10] = an["wm"] * rest, an["gm"] * rest, an["csf"] * rest
    inside = an["brain"] > 0.5
    return {k: f * inside for k, f in frac.items()}


def make_chisep_head(snr: float = 200.0, seed: int = 0) -> ChiSepHead:
    """Simulate the head (about 10 s on two cores); see the module docstring."""
    import qsm_forward as qf

    from napari_myelin.sims.phantom.anatomy import _anatomy

    an = _anatomy("full")
    mask = an["brain"] > 0.5
    frac = _fractions(an)
    chi_pos = sum(f * qf.CHISEP_TISSUE_PARAMS[k][0] for k, f in frac.items())
    chi_neg = sum(f * qf.CHISEP_TISSUE_PARAMS[k][1] for k, f in frac.items())
    r2, r1, m0 = (sum(f * table[k] for k, f in frac.items()) for table in
                  ({k: 1 / t for k, t in _T2.items()}, {k: 1 / t for k, t in _T1.items()}, _M0))
    vox = float(np.sqrt((an["affine"][:3, :3] ** 2).sum(axis=0))[0])
    field = qf.generate_field(chi_pos + chi_neg, mask=mask, voxel_size=[vox] * 3, B0_dir=[0, 0, 1])
    te = 0.004 + 0.006 * np.arange(6)
    rng = np.random.default_rng(seed)
    gre = np.stack([qf.generate_signal(field, B0=3, TR=0.04, TE=t, flip_angle=15, R1=r1, M0=m0, R2=r2,
                                       dr_pos=qf.DR_KERNEL, dr_neg=qf.DR_KERNEL, chi_pos=chi_pos, chi_neg=chi_neg)
                    for t in te], axis=-1) * mask[..., None]
    gre = qf.add_noise(gre, peak_snr=snr, rng=rng)
    te_se = 0.012 * np.arange(1, 9)
    se = np.stack([qf.generate_se_signal(TR=3.0, TE=t, R1=r1, R2=r2, M0=m0) for t in te_se], axis=-1) * mask[..., None]
    se = np.abs(qf.add_noise(se, peak_snr=snr, rng=rng))
    labels = np.zeros(an["shape"], np.int16)
    for k, f in frac.items():
        labels[f > 0.9] = k
    return ChiSepHead(np.abs(gre).astype(np.float32), np.angle(gre).astype(np.float32), te, se.astype(np.float32),
                      te_se, chi_pos.astype(np.float32), (-chi_neg).astype(np.float32), r2.astype(np.float32),
                      (field * mask).astype(np.float32), mask, labels, an["affine"].copy())

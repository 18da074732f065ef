"""Digital brain phantom: one anatomy, four simulated acquisitions, ground truth for every estimator.

Anatomy
-------
The shipped MNI ICBM152 2009a templates (WM/GM probabilities, brain mask; CSF = brain - WM - GM)
and the HCP842-derived tract label map with its fibre-direction map (:mod:`.atlas`) define, on a
*model grid* in template space (2 mm for ``size="full"``, 4 mm for ``"small"``), per-voxel tissue
properties:

* **water pools** (fractions of the voxel's water, proton density ``pd`` relative to pure water:
  WM 0.69, GM 0.80, CSF 1.0): myelin water (T2 20 ms, T1 0.5 s), intra/extra-cellular water
  (T2 75 ms in WM, 90 ms in GM; T1 1.05 s in WM, 1.6 s in GM), CSF (T2 2 s, T1 4 s).
  The white-matter myelin-water fraction depends on the tract (:data:`TRACT_MWF`, 7-19 %,
  highest in the peduncles and projection tracts through the internal capsule, lowest in the
  subcortical U fibres), varied by +-5 % (relative) per tract and subject; GM 3 % (deep GM 5 %).
  ``mwf`` = myelin water / total water.
* **susceptibility** (ppm, CSF = 0): WM -0.03 x (myelin / 0.13), cortical GM +0.02, iron-rich
  deep GM up to +0.15 (globus pallidus, substantia nigra, red nucleus, dentate, putamen, caudate,
  thalamus: ellipsoids at MNI positions), a few veins (+0.35 ppm).
* **diffusion**: a Gaussian compartment mixture whose cumulant expansion gives the voxel's
  diffusion and kurtosis tensors exactly (Jensen & Helpern 2010): WM intra-axonal (D par 2.0,
  perp 0.1 um^2/ms) and extra-axonal (1.5 / 0.8) compartments along the tract's fibre direction
  (:func:`.atlas.load_fibre_direction`: principal axis of the local covariance of the tract mask;
  unlabelled WM takes the direction of the nearest labelled voxel), the axonal fraction rising
  with myelin, plus a restricted isotropic pool (0.05, 25 % of WM water); GM two isotropic compartments (0.5 and 1.2); CSF free water (3.0). Myelin water
  is invisible at diffusion echo times and excluded. Where a partial-volume mixture would make
  the 2nd-order DKI signal non-monotonic below 2 x b_max, the kurtosis tensor is scaled down
  (documented truncation, so the simulated signal is physical).
* optional **pathology** (``lesions=True``): ellipsoidal periventricular demyelinating lesions
  (myelin x 0.2, IE T2 110 ms, +8 % water, fewer axons, less diamagnetic, lower R2*) and one tract
  of "normal-appearing" white matter with MWF reduced by 25 % (relative) and IE T2 only +2 %;
  masks ``lesion`` and ``nawm_demyelination`` are in every truth set.

Subject and acquisitions
------------------------
The subject is the template scaled (0.95-1.05), rotated (up to 6 deg per axis), translated (up to
5 mm) and smoothly deformed (sinusoidal displacement field, ~2 mm) into scanner coordinates,
all drawn from ``seed``. Each acquisition has its own grid (voxel size, field of view, orientation;
the GRE slab is oblique, the DWI is stored LAS as dcm2niix writes it); property maps are resampled
onto it by world coordinates (linear; labels and directions nearest) and the signal computed there:

* **MESE** (CPMG, 32 echoes, TE 10 ms): three pools through the extended phase graph
  (:func:`.epg.epg_decay_curve`), refocusing angle 180 x B1 (150-180 deg), i.e. stimulated echoes.
  Curves are tabulated per distinct T2 (IE T2 quantised to 0.5 ms) on a 0.25-deg angle grid and
  interpolated linearly in angle (exact at 180 deg).
* **DWI**: b = 0, 1000, 2000 s/mm^2, 32 directions per shell, signal = ``dipy.reconst.dki.dki_prediction``
  of the true tensors (expressed in the image's voxel axes, which the ``.bvec`` uses).
* **multi-echo GRE** (3 T, 5 echoes): the susceptibility map is resampled onto a grid twice as
  fine as the acquisition (same oblique orientation), its field computed there with the dipole
  kernel (:func:`.dipole.forward_field`, zero padded, B0 direction from the affine,
  :func:`.dipole.b0_direction`) and averaged over each acquired voxel (no inverse crime); a
  background field from air-filled spheres outside the brain (sinuses, ear canals; closed form
  :func:`.dipole.sphere_field`) and a linear shim residual is added; phase =
  ``2 pi gamma B0 field TE + phi0`` (smooth receive phase), wrapped to (-pi, pi];
  magnitude ``pd exp(-R2* TE)``.
* **SPGR** (flip angles 3, 10, 20 deg, TR 15 ms): two-pool exchanging tissue water
  (:func:`.qpm.spgr_two_pool_signal`) plus a single-pool CSF Ernst signal, with the same B1 field;
  the **B1 map** is delivered on its own coarse grid.
* Rician noise (complex Gaussian noise, magnitude taken) with sigma = mean brain signal of the
  reference volume (first echo, mean b = 0, first GRE echo, largest SPGR flip angle) / ``snr``.

Truth maps are resampled onto each acquisition's grid (``ph.truth[modality]``) with units in
their metadata. Everything is deterministic for a given ``seed``.

References
----------
Hennig J. Echoes - how to generate, recognize, use or avoid them in MR-imaging sequences.
Concepts Magn Reson 3:125 (1991).  Jensen JH, Helpern JA. MRI quantification of non-Gaussian water
diffusion by kurtosis analysis. NMR Biomed 23:698 (2010).  Marques JP, Bowtell R. Concepts Magn
Reson B 25:65 (2005).  Deoni SCL et al. Magn Reson Med 60:1372 (2008).  Laule C et al. Myelin water
imaging in multiple sclerosis. Mult Scler 12:747 (2006).  Lee J et al. The contribution of myelin to
magnetic susceptibility of white matter. NeuroImage 59:3967 (2012).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from napari_myelin.align import atlas
from napari_myelin.reconst.dipole import sphere_field
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step
from napari_myelin.io.volume import Volume, check_output_folder, save_volume

# --------------------------------------------------------------------------------------------------
# tissue constants
# --------------------------------------------------------------------------------------------------
GAMMA_HZ_PER_T = 42.577478518e6
B0_TESLA = 3.0
PD = {"wm": 0.69, "gm": 0.80, "csf": 1.0}
T2 = {"my": 0.020, "ie_wm": 0.075, "ie_gm": 0.090, "csf": 2.0}
T1 = {"my": 0.5, "ie_wm": 1.05, "ie_gm": 1.6, "csf": 4.0}
TAU_MYELIN = 0.12
MWF_GM, MWF_DEEP_GM, MWF_WM_DEFAULT = 0.03, 0.05, 0.10
CHI = {"wm_per_mwf": -0.03 / 0.13, "gm": 0.02, "vein": 0.35, "air": 9.2}

#: White-matter myelin-water fraction by tract (abbreviation without side), healthy adult.
TRACT_MWF = {
    "AR": 0.12, "CS": 0.11, "CST": 0.17, "CT": 0.15, "FX": 0.08, "FPT": 0.16, "OPT": 0.15, "OR": 0.14,
    "PPT": 0.16, "TPT": 0.15, "AF": 0.11, "C": 0.11, "EMC": 0.10, "FAT": 0.10, "IFOF": 0.12, "ILF": 0.12,
    "MdLF": 0.11, "SLF": 0.11, "U": 0.07, "UF": 0.10, "VOF": 0.10, "AC": 0.12, "GCC": 0.12, "BCC": 0.13,
    "SCC": 0.15, "PC": 0.12, "CB": 0.10, "ICP": 0.18, "MCP": 0.19, "SCP": 0.18, "V": 0.09, "CTT": 0.16,
    "DLF": 0.15, "LL": 0.16, "ML": 0.17, "MLF": 0.16, "RST": 0.16, "STT": 0.16,
}

#: Iron-rich deep grey matter: (name, centre MNI mm (x>0 mirrored), semi-axes mm, chi ppm).
DEEP_GM = (
    ("globus_pallidus", (19, -3, 0), (5, 8, 5), 0.15),
    ("putamen", (26, 2, 2), (5, 13, 8), 0.07),
    ("caudate", (13, 12, 10), (4, 8, 8), 0.06),
    ("thalamus", (11, -18, 7), (7, 11, 7), 0.02),
    ("red_nucleus", (5, -20, -8), (3, 3, 3), 0.12),
    ("substantia_nigra", (10, -16, -12), (3, 6, 3), 0.12),
    ("dentate", (14, -56, -34), (6, 6, 5), 0.10),
)
#: Veins as line segments (MNI mm start, end, radius mm).
VEINS = (
    ((-3, -4, 16), (-3, -36, 16), 1.5),
    ((3, -4, 16), (3, -36, 16), 1.5),
    ((0, -40, 14), (0, -70, 2), 2.0),
    ((-28, 10, 30), (-28, -40, 40), 1.0),
    ((28, 10, 30), (28, -40, 40), 1.0),
)
#: Air cavities outside the brain giving the background field: (centre MNI mm, radius mm).
AIR = (((0, 80, -26), 11.0), ((0, 30, -58), 14.0), ((-70, -22, -44), 7.0), ((70, -22, -44), 7.0))

SIZES = {
    # model grid (mm) and per acquisition: voxel (mm), field of view (mm)
    "small": {
        "model_mm": 4,
        "mese": ((4.0, 4.0, 5.0), (192, 224, 160)),
        "dwi": ((4.4, 4.4, 4.4), (194, 220, 150)),
        "gre": ((4.0, 4.0, 4.0), (184, 216, 152)),
        "spgr": ((4.5, 4.5, 4.5), (198, 225, 162)),
        "b1": ((8.0, 8.0, 8.0), (232, 256, 192)),
        "gre_echoes": 4,
    },
    "full": {
        "model_mm": 2,
        "mese": ((2.0, 2.0, 3.0), (192, 224, 153)),
        "dwi": ((2.2, 2.2, 2.2), (198, 224, 145)),
        "gre": ((2.0, 2.0, 2.0), (184, 216, 152)),
        "spgr": ((2.4, 2.4, 2.4), (197, 230, 158)),
        "b1": ((5.0, 5.0, 5.0), (230, 260, 190)),
        "gre_echoes": 5,
    },
}
MESE_ECHOES, MESE_TE = 32, 0.010
SPGR_FLIPS, SPGR_TR = (3.0, 10.0, 20.0), 0.015
GRE_TE1, GRE_DTE, GRE_FLIP, GRE_TR = 0.004, 0.005, 15.0, 0.030
DWI_BVALS, DWI_DIRS, DWI_B0S = (1000.0, 2000.0), 32, 5
S0_SCALE = 1000.0
#: Series written as int16 (rounded) by :func:`write_phantom`, as scanners export magnitudes.
INT16_SERIES = ("mese", "dwi", "gre_mag", "spgr")


@dataclass
class Phantom:
    """A simulated subject.

    Attributes
    ----------
    acq : dict of str to Volume
        ``mese``, ``dwi``, ``gre_mag``, ``gre_phase``, ``spgr``, ``b1``.
    truth : dict of str to dict of str to Volume
        Truth maps per modality (``mese``, ``dwi``, ``gre``, ``spgr``, ``b1``) on that modality's grid.
    lut : DataFrame
        Tract lookup table (``index``, ``name``, ``abbreviation``, ``hemisphere``).
    parameters : dict
        Seed, size, SNR, subject pose and the tract MWF values used.
    """

    acq: dict
    truth: dict
    lut: pd.DataFrame
    parameters: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# simulators (public so that tests compare them with independent formulas)
# --------------------------------------------------------------------------------------------------
def simulate_mese(fractions, t2, t1, refocusing_deg, n_echoes: int = MESE_ECHOES, echo_spacing: float = MESE_TE,
                  angle_step: float = 0.25) -> np.ndarray:
    """Multi-pool CPMG echo trains by the extended phase graph, tabulated for speed.

    ``S_n = sum_p f_p EPG_n(T2_p, T1_p, alpha)``; EPG curves (:func:`.epg.epg_decay_curve`) are
    computed once per distinct ``(T2, T1)`` on an ``angle_step`` grid of refocusing angles and
    interpolated linearly in angle (exact on grid angles, e.g. 180 deg).

    Parameters
    ----------
    fractions, t2, t1 : ndarray, shape (N, P)
        Pool signal fractions, T2 (s) and T1 (s) of P pools in N voxels.
    refocusing_deg : ndarray, shape (N,)
        Actual refocusing angle (deg).

    Returns
    -------
    ndarray, shape (N, n_echoes)
    """
    from napari_myelin.reconst.epg import epg_decay_curve

    fractions, t2, t1 = (np.atleast_2d(np.asarray(a, float)) for a in (fractions, t2, t1))
    alpha = np.asarray(refocusing_deg, float).reshape(-1)
    lo = np.floor(alpha.min() / angle_step) * angle_step
    hi = np.ceil(alpha.max() / angle_step) * angle_step
    grid = np.arange(lo, hi + angle_step / 2, angle_step)
    pos = (alpha - lo) / angle_step
    i0 = np.clip(np.floor(pos).astype(int), 0, grid.size - 1)
    i1 = np.minimum(i0 + 1, grid.size - 1)
    w = (pos - i0)[:, None]
    out = np.zeros((alpha.size, int(n_echoes)))
    pairs = np.stack([t2.ravel(), t1.ravel()], axis=1)
    keys = pairs[:, 0] + 1j * pairs[:, 1]  # exact (T2, T1) pairs as one sortable key
    uniq_keys, inverse = np.unique(keys, return_inverse=True)
    uniq = np.stack([uniq_keys.real, uniq_keys.imag], axis=1)
    inverse = inverse.reshape(t2.shape)
    table = epg_decay_curve(n_echoes, echo_spacing, uniq[:, 0:1], uniq[:, 1:2], grid[None, :])  # (U, A, n)
    for p in range(t2.shape[1]):
        curve = (1 - w) * table[inverse[:, p], i0] + w * table[inverse[:, p], i1]
        out += fractions[:, p:p + 1] * curve
    return out


def simulate_spgr(m0_tissue, f_m, t1_ie, m0_csf, flip_angles_deg, tr, b1=None, *, t1_m=T1["my"],
                  t1_csf=T1["csf"], tau_m=TAU_MYELIN) -> np.ndarray:
    """SPGR signal: two exchanging tissue pools (:func:`.qpm.spgr_two_pool_signal`) + CSF (Ernst).

    Returns
    -------
    ndarray, shape ``broadcast(...) + (n_flip,)``
    """
    from napari_myelin.reconst.qpm import spgr_signal, spgr_two_pool_signal

    tissue = spgr_two_pool_signal(m0_tissue, f_m, flip_angles_deg, tr, t1_m=t1_m, t1_ie=t1_ie, tau_m=tau_m, b1=b1)
    csf = spgr_signal(m0_csf, t1_csf, flip_angles_deg, tr, b1=b1)
    return tissue + csf


def simulate_dwi(dki_params, bvals, bvecs, s0=1.0) -> np.ndarray:
    """DWI signal of DKI parameters (``(..., 27)``: evals, evecs, kt), vectorised.

    ``S(n, b) = S0 exp(-b D(n) + b^2 MD^2 W(n) / 6)`` computed exactly as
    ``dipy.reconst.dki.dki_prediction`` (same design matrix and parameter vector) but for all
    voxels at once (dipy loops over voxels in Python).

    Parameters
    ----------
    dki_params : ndarray, shape (..., 27)
    bvals : ndarray, shape (M,)
        s/mm^2.
    bvecs : ndarray, shape (M, 3)
        Unit directions in the frame of the tensors.
    s0 : float or ndarray broadcastable to ``dki_params.shape[:-1]``

    Returns
    -------
    ndarray, shape ``dki_params.shape[:-1] + (M,)``
    """
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dki import design_matrix

    params = np.asarray(dki_params, float)
    lead = params.shape[:-1]
    p = params.reshape(-1, 27)
    gtab = gradient_table(np.asarray(bvals, float), bvecs=np.asarray(bvecs, float), b0_threshold=50)
    a = design_matrix(gtab)  # (M, 22): 6 dt (lower triangular), 15 kt * MD^2, -log S0
    evals, evecs = p[:, :3], p[:, 3:12].reshape(-1, 3, 3)
    dt = np.einsum("nij,nj,nkj->nik", evecs, evals, evecs)
    low = np.stack([dt[:, 0, 0], dt[:, 1, 0], dt[:, 1, 1], dt[:, 2, 0], dt[:, 2, 1], dt[:, 2, 2]], axis=1)
    md = evals.sum(axis=1) / 3.0
    s0 = np.broadcast_to(np.asarray(s0, float), lead).reshape(-1)
    with np.errstate(divide="ignore"):
        x = np.concatenate([low, p[:, 12:] * (md * md)[:, None], -np.log(s0)[:, None]], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = np.exp(x @ a.T)
    sig[s0 == 0] = 0.0
    return sig.reshape(lead + (a.shape[0],))


def fine_grid(affine: np.ndarray, shape, factor: int = 2) -> tuple[np.ndarray, tuple[int, ...]]:
    """A grid ``factor`` times finer whose ``factor^3`` blocks tile the voxels of ``(affine, shape)``."""
    sub = np.eye(4)
    sub[:3, :3] /= factor
    sub[:3, 3] = -(factor - 1) / (2.0 * factor)
    return affine @ sub, tuple(int(n) * factor for n in shape[:3])


def block_mean(a: np.ndarray, factor: int = 2) -> np.ndarray:
    """Mean over ``factor^3`` blocks (inverse of :func:`fine_grid`)."""
    x, y, z = (n // factor for n in a.shape[:3])
    return a.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5))


def simulate_field(chi_fine: np.ndarray, fine_affine: np.ndarray, factor: int = 2) -> np.ndarray:
    """Field (ppm) of a susceptibility map given on a fine grid, averaged onto the acquisition grid.

    The dipole kernel uses B0 = world z expressed in the (possibly oblique) voxel axes
    (:func:`.dipole.b0_direction`) and automatic zero padding (:func:`.dipole.forward_field`).
    """
    from napari_myelin.reconst.dipole import b0_direction, forward_field

    zooms = np.sqrt((fine_affine[:3, :3] ** 2).sum(axis=0))
    f = forward_field(chi_fine.astype(np.float32), zooms, b0_direction(fine_affine), pad="auto")
    return block_mean(f, factor)


def mixture_dki(fractions: np.ndarray, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion and kurtosis tensors of a mixture of Gaussian compartments (cumulant expansion).

    ``D = sum_c f_c D_c``; ``W_ijkl = (1/MD^2) [sum_c f_c (D_ij D_kl + D_ik D_jl + D_il D_jk)_c
    - (D_ij D_kl + D_ik D_jl + D_il D_jk)]`` (Jensen & Helpern 2010), as dipy's ``multi_tensor_dki``.

    Parameters
    ----------
    fractions : ndarray, shape (N, C)
        Signal fractions (rows sum to 1).
    tensors : ndarray, shape (N, C, 3, 3)

    Returns
    -------
    dt : ndarray, shape (N, 3, 3)
    kt : ndarray, shape (N, 15)
        dipy order W1111, W2222, W3333, W1112, W1113, W1222, W2223, W1333, W2333, W1122, W1133,
        W2233, W1123, W1223, W1233.
    """
    f = fractions[..., None, None]
    dt = (f * tensors).sum(axis=1)
    md = np.trace(dt, axis1=-2, axis2=-1) / 3.0
    kt = np.zeros(dt.shape[:1] + (15,))
    md2 = np.where(md > 0, md * md, 1.0)
    for n, (i, j, k, l) in enumerate(_KT_INDICES):
        comp = (tensors[..., i, j] * tensors[..., k, l] + tensors[..., i, k] * tensors[..., j, l]
                + tensors[..., i, l] * tensors[..., j, k])
        mean = dt[:, i, j] * dt[:, k, l] + dt[:, i, k] * dt[:, j, l] + dt[:, i, l] * dt[:, j, k]
        kt[:, n] = ((fractions * comp).sum(axis=1) - mean) / md2
    return dt, kt


_KT_INDICES = ((0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 0, 1), (0, 0, 0, 2), (0, 1, 1, 1), (1, 1, 1, 2),
               (0, 2, 2, 2), (1, 2, 2, 2), (0, 0, 1, 1), (0, 0, 2, 2), (1, 1, 2, 2), (0, 0, 1, 2), (0, 1, 1, 2),
               (0, 1, 2, 2))


def _apparent_dk(dt: np.ndarray, kt: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent D(n) (N, M) and MD^2 W(n) / 1 -> (N, M) along unit directions ``dirs`` (M, 3)."""
    dn = np.einsum("mi,nij,mj->nm", dirs, dt, dirs)
    wn = np.zeros_like(dn)
    mult = {}
    from itertools import permutations

    for n, idx in enumerate(_KT_INDICES):
        mult[n] = len(set(permutations(idx)))
    for n, (i, j, k, l) in enumerate(_KT_INDICES):
        wn += mult[n] * kt[:, n:n + 1] * (dirs[:, i] * dirs[:, j] * dirs[:, k] * dirs[:, l])[None, :]
    return dn, wn


def dki_params_from_tensors(dt: np.ndarray, kt: np.ndarray) -> np.ndarray:
    """dipy's 27 DKI parameters (evals descending, evecs as columns, kt) from tensors."""
    evals, evecs = np.linalg.eigh(dt)
    evals, evecs = evals[:, ::-1], evecs[:, :, ::-1]
    return np.concatenate([evals, evecs.reshape(-1, 9), kt], axis=1)


#: Diffusion compartments (parallel, perpendicular diffusivity in um^2/ms = 1e-3 mm^2/s).
WM_INTRA, WM_EXTRA, WM_RESTRICTED, WM_RESTRICTED_FRACTION = (2.0, 0.10), (1.5, 0.80), 0.05, 0.25
GM_COMPARTMENTS, CSF_DIFFUSIVITY = (0.5, 1.2), 3.0


def _compartments(fib, fw, fg, fc, axon):
    n = fib.shape[0]
    outer = fib[:, :, None] * fib[:, None, :]
    eye = np.repeat(np.eye(3)[None], n, axis=0)

    def tensor(par, perp):
        return (perp * eye + (par - perp) * outer) * 1e-3

    tensors = np.stack([tensor(*WM_INTRA), tensor(*WM_EXTRA), WM_RESTRICTED * 1e-3 * eye,
                        GM_COMPARTMENTS[0] * 1e-3 * eye, GM_COMPARTMENTS[1] * 1e-3 * eye,
                        CSF_DIFFUSIVITY * 1e-3 * eye], axis=1)
    wm_free = fw * (1 - WM_RESTRICTED_FRACTION)
    fr = np.stack([wm_free * axon, wm_free * (1 - axon), fw * WM_RESTRICTED_FRACTION, fg * 0.5, fg * 0.5, fc], axis=1)
    return fr, tensors


def tissue_dki(fib, fw, fg, fc, axon, *, b_max: float = 2000.0, n_quad: int = 48):
    """True DKI parameters of the phantom's compartment mixture, and their scalar maps.

    Parameters
    ----------
    fib : ndarray, shape (N, 3)
        Unit fibre direction in the frame of the gradient table (image voxel axes).
    fw, fg, fc : ndarray, shape (N,)
        Signal fractions of white-matter, grey-matter and CSF water (sum 1).
    axon : ndarray, shape (N,)
        Intra-axonal share of the (non-restricted) white-matter water.
    b_max : float
        Largest b-value (s/mm^2): the kurtosis tensor is scaled down where the 2nd-order signal
        ``exp(-b D(n) + b^2 D(n)^2 K(n) / 6)`` would stop decreasing before ``2 b_max``.

    Returns
    -------
    params : ndarray, shape (N, 27)
        dipy DKI parameters in the voxel frame.
    maps : dict
        ``fa``, ``md``, ``ad``, ``rd`` (mm^2/s) and ``mk``, ``ak``, ``rk`` computed in the fibre's
        own frame (all compartments share the fibre axis, so the tensors are axially symmetric):
        ``AK = K(e_fib)``, ``RK = K(e_perp)``, ``MK`` = the spherical mean of ``K(n)``
        (Gauss-Legendre in ``cos theta``). These equal ``dipy.reconst.dki.axial_kurtosis``,
        ``radial_kurtosis`` and ``mean_kurtosis`` (analytical) of ``params`` (checked by the
        tests), at a fraction of their cost, and are clipped as dipy clips them.
    """
    fib = np.asarray(fib, float)
    fr, tens = _compartments(fib, fw, fg, fc, axon)
    dt, kt = mixture_dki(fr, tens)
    z = np.zeros_like(fib)
    z[:, 2] = 1.0
    fr_c, tens_c = _compartments(z, fw, fg, fc, axon)
    dt_c, kt_c = mixture_dki(fr_c, tens_c)
    u, wq = np.polynomial.legendre.leggauss(n_quad)
    u, wq = 0.5 * (u + 1), 0.5 * wq  # nodes and weights on [0, 1]
    dirs = np.concatenate([np.stack([np.sqrt(1 - u * u), np.zeros_like(u), u], 1), [[0, 0, 1.0], [1.0, 0, 0]]])
    dn, wn = _apparent_dk(dt_c, kt_c, dirs)
    md = np.trace(dt_c, axis1=1, axis2=2) / 3
    dn = np.maximum(dn, 1e-12)
    excess = (md[:, None] ** 2 * wn / dn).max(axis=1) * (2 * b_max * 1.0) / 3.0
    scale = np.minimum(1.0, 1.0 / np.maximum(excess, 1e-12))
    kt *= scale[:, None]
    kn = scale[:, None] * md[:, None] ** 2 * wn / dn ** 2
    lam_par, lam_perp = dt_c[:, 2, 2], dt_c[:, 0, 0]
    evals = np.stack([lam_par, lam_perp, lam_perp], axis=1)
    from dipy.reconst import dti

    maps = {
        "fa": dti.fractional_anisotropy(evals), "md": md, "ad": lam_par, "rd": lam_perp,
        "mk": np.clip(kn[:, :n_quad] @ wq, -3.0 / 7, 3.0),
        "ak": np.clip(kn[:, n_quad], -3.0 / 7, 10.0),
        "rk": np.clip(kn[:, n_quad + 1], -3.0 / 7, 10.0),
    }
    return dki_params_from_tensors(dt, kt), maps


def fibonacci_sphere(n: int, offset: float = 0.0) -> np.ndarray:
    """``n`` near-uniform unit vectors on the upper hemisphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    phi = np.pi * (1 + 5 ** 0.5) * i + offset
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def gradient_scheme() -> tuple[np.ndarray, np.ndarray]:
    """b-values (s/mm^2) and unit directions: 5 b=0 interleaved, 32 directions at b=1000 and 2000."""
    bvals, bvecs = [], []
    for s, b in enumerate(DWI_BVALS):
        d = fibonacci_sphere(DWI_DIRS, offset=0.7 * s)
        bvals += [b] * DWI_DIRS
        bvecs += list(d)
    bvals, bvecs = np.array(bvals), np.array(bvecs)
    slots = np.linspace(0, bvals.size, DWI_B0S, endpoint=False).astype(int)
    bvals = np.insert(bvals, slots, 0.0)
    bvecs = np.insert(bvecs, slots, 0.0, axis=0)
    return bvals, bvecs


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------
def _rotation(deg) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def acquisition_grid(voxel_mm, fov_mm, *, rotation_deg=(0, 0, 0), center=(0, 0, 0), flip_x=False):
    """Affine and shape of a grid of ``voxel_mm`` covering ``fov_mm`` centred on ``center`` (world mm)."""
    voxel = np.asarray(voxel_mm, float)
    shape = tuple(int(round(f / v)) for f, v in zip(fov_mm, voxel))
    axes = _rotation(rotation_deg) @ np.diag(voxel * ([-1, 1, 1] if flip_x else [1, 1, 1]))
    aff = np.eye(4)
    aff[:3, :3] = axes
    aff[:3, 3] = np.asarray(center, float) - axes @ ((np.array(shape) - 1) / 2.0)
    return aff, shape


@dataclass
class Pose:
    """Subject placement: template point ``p_t`` -> scanner point ``p_s = s R p_t + t`` (+ deformation)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    amp: np.ndarray  # (K, 3) displacement amplitudes (mm)
    wave: np.ndarray  # (K, 3) wave vectors (rad/mm)
    phase: np.ndarray  # (K,)

    def to_template(self, p_s: np.ndarray) -> np.ndarray:
        """Template coordinates (mm) of scanner points ``p_s`` (3, N)."""
        p_t = self.rotation.T @ (p_s - self.translation[:, None]) / self.scale
        return p_t + self.displacement(p_s)

    def displacement(self, p_s: np.ndarray) -> np.ndarray:
        arg = (self.wave @ p_s + self.phase[:, None]).astype(np.float32)  # (K, N)
        return self.amp.T.astype(np.float32) @ np.sin(arg, out=arg)

    def to_scanner(self, p_t: np.ndarray) -> np.ndarray:
        """Approximate inverse (no deformation), used for far-away field sources."""
        return self.scale * self.rotation @ np.asarray(p_t, float).reshape(3, -1) + self.translation[:, None]


def _pose(rng: np.random.Generator) -> Pose:
    k = 4
    return Pose(
        scale=float(rng.uniform(0.95, 1.05)),
        rotation=_rotation(rng.uniform(-6, 6, 3)),
        translation=rng.uniform(-5, 5, 3) + np.array([0.0, 10.0, -5.0]),
        amp=rng.normal(0, 1.0, (k, 3)),
        wave=rng.normal(0, 1.0, (k, 3)) * (2 * np.pi / 160.0),
        phase=rng.uniform(0, 2 * np.pi, k),
    )


def _b1_field(p_s: np.ndarray, rng_params: np.ndarray) -> np.ndarray:
    """Smooth transmit field ratio in 0.84-1.0 (refocusing 150-180 deg): centre-peaked, tilted."""
    c, tilt = rng_params[:3], rng_params[3:6]
    d = (p_s - c[:, None]) / np.array([[95.0], [110.0], [90.0]])
    r2 = (d ** 2).sum(axis=0)
    b1 = 1.0 - 0.10 * r2 + 0.03 * (tilt @ d)
    return np.clip(b1, 0.84, 1.0)


# --------------------------------------------------------------------------------------------------
# anatomy on the model grid (template space)
# --------------------------------------------------------------------------------------------------
def _downsample(vol: Volume, factor: int, kind: str) -> Volume:
    if factor == 1:
        return vol
    data = vol.data
    pad = [(0, (-n) % factor) for n in data.shape[:3]] + [(0, 0)] * (data.ndim - 3)
    data = np.pad(data, pad)
    if kind == "mean":
        x, y, z = (n // factor for n in data.shape[:3])
        out = data.reshape(x, factor, y, factor, z, factor, *data.shape[3:]).mean(axis=(1, 3, 5))
    else:  # nearest: the voxel nearest to the block centre
        out = data[factor // 2::factor, factor // 2::factor, factor // 2::factor]
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, :3] * factor
    aff[:3, 3] = vol.affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + vol.affine[:3, 3]
    return Volume(out, aff, None, dict(vol.metadata), None)


def _world_coords(affine: np.ndarray, shape) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, shape (3, N), float64."""
    out = np.empty((3,) + tuple(int(n) for n in shape[:3]))
    axes = [np.arange(n, dtype=np.float64) for n in shape[:3]]
    for r in range(3):
        out[r] = (affine[r, 3] + affine[r, 0] * axes[0][:, None, None] + affine[r, 1] * axes[1][None, :, None]
                  + affine[r, 2] * axes[2][None, None, :])
    return out.reshape(3, -1)


def _ellipsoid(world: np.ndarray, centre, semi, soft: float = 1.0) -> np.ndarray:
    d = np.sqrt((((world - np.asarray(centre, float)[:, None]) / np.asarray(semi, float)[:, None]) ** 2).sum(0))
    r = np.min(semi)
    return np.clip(0.5 - (d - 1.0) * r / (2 * soft), 0.0, 1.0)


def _segment_distance(world: np.ndarray, a, b) -> np.ndarray:
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[:, None]
    ab = b - a
    t = np.clip(((world - a) * ab).sum(0) / (ab * ab).sum(), 0, 1)
    return np.linalg.norm(world - (a + ab * t), axis=0)


@functools.lru_cache(maxsize=2)
def _anatomy(size: str) -> dict:
    """Seed-independent anatomy on the model grid (cached; arrays are read-only)."""
    factor = SIZES[size]["model_mm"] // 2
    wm = _downsample(atlas.load_tissue_probability("wm", 2), factor, "mean")
    gm = _downsample(atlas.load_tissue_probability("gm", 2), factor, "mean").data
    brain_vol = atlas.load_brain_mask(2)
    brain_vol.data = brain_vol.data.astype(np.float32)
    brain = _downsample(brain_vol, factor, "mean").data
    labels_vol, lut = atlas.load_tract_atlas(2)
    affine = wm.affine
    shape = wm.shape
    # nearest sampling takes the voxel at block index factor//2 (within 1 mm of the block centre)
    labels = _downsample(labels_vol, factor, "nearest").data.astype(np.int32)
    dirs = _downsample(atlas.load_fibre_direction(), factor, "nearest").data
    wm = wm.data
    brain = np.clip(brain, 0, 1)
    wm, gm = wm * (brain > 0), gm * (brain > 0)
    tot = np.maximum(wm + gm, 1.0)
    wm, gm = wm / tot, gm / tot
    csf = np.clip(brain - wm - gm, 0, 1)
    world = _world_coords(affine, shape)
    # every voxel takes the label and fibre direction of the nearest labelled voxel (for WM outside labels)
    _, near = ndi.distance_transform_edt(labels == 0, return_indices=True)
    nearest_label = labels[tuple(near)]
    fibre = dirs[tuple(near)]
    fibre = fibre / np.maximum(np.linalg.norm(fibre, axis=-1, keepdims=True), 1e-6)

    # deep grey matter (iron) and veins
    deep = np.zeros(shape, np.float32)
    chi_iron = np.zeros(shape, np.float32)
    for _, centre, semi, chi in DEEP_GM:
        for sx in (-1, 1):
            e = _ellipsoid(world, (sx * centre[0], centre[1], centre[2]), semi).reshape(shape)
            deep = np.maximum(deep, e)
            chi_iron = np.maximum(chi_iron, chi * e)
    deep *= brain > 0
    chi_iron *= brain > 0
    vein = np.zeros(shape, np.float32)
    for a, b, r in VEINS:
        d = _segment_distance(world, a, b).reshape(shape)
        vein = np.maximum(vein, np.clip(0.5 - (d - r) / (SIZES[size]["model_mm"]), 0, 1))
    vein *= brain > 0
    out = dict(affine=affine, shape=shape, lut=lut, wm=wm, gm=gm, csf=csf, brain=brain, labels=labels,
               nearest_label=nearest_label, fibre=fibre.astype(np.float32), deep=deep, chi_iron=chi_iron, vein=vein,
               world=world)
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return out


def _model(size: str, rng: np.random.Generator, lesions: bool, nawm_reduction: float) -> dict:
    """Property maps on the model grid (template space). Returns a dict of arrays + 'affine'."""
    an = _anatomy(size)
    affine, shape, lut, world = an["affine"], an["shape"], an["lut"].copy(), an["world"]
    wm, gm, csf, brain, labels = an["wm"], an["gm"], an["csf"], an["brain"], an["labels"]
    deep, chi_iron, vein, fibre = an["deep"], an["chi_iron"], an["vein"], an["fibre"]

    # tract MWF (+-5 % per tract and subject); WM outside labels takes the nearest label's value
    abbr = lut["abbreviation"].str.replace(r"_[LR]$", "", regex=True)
    per_tract = np.array([TRACT_MWF.get(a, MWF_WM_DEFAULT) for a in abbr]) * (1 + 0.05 * rng.standard_normal(len(lut)))
    table = np.full(int(lut["index"].max()) + 1, MWF_WM_DEFAULT)
    table[lut["index"].to_numpy()] = per_tract
    mwf_wm = table[an["nearest_label"]]

    # pathology
    lesion = np.zeros(shape, np.float32)
    nawm = np.zeros(shape, np.float32)
    if lesions:
        cand = np.flatnonzero((wm > 0.9).ravel() & (np.abs(world[0]) < 32) & (world[1] > -40) & (world[1] < 25)
                              & (world[2] > 5) & (world[2] < 35))
        n_les = 5
        for c in rng.choice(cand, size=min(n_les, cand.size), replace=False):
            semi = rng.uniform(4, 8, 3) * max(1.0, SIZES[size]["model_mm"] / 3)
            lesion = np.maximum(lesion, _ellipsoid(world, world[:, c], semi, soft=2.0).reshape(shape))
        lesion *= (wm + gm) > 0.3
        big = ["CST", "SLF", "ILF", "IFOF", "OR", "CT", "AF"]
        pick = rng.choice(big)
        side = rng.choice(["L", "R"])
        idx = lut.loc[lut["abbreviation"] == f"{pick}_{side}", "index"].to_numpy()
        nawm = ndi.gaussian_filter(np.isin(labels, idx).astype(np.float32), 0.7) * (wm > 0.3)
        nawm = np.clip(nawm * 2, 0, 1) * (1 - lesion)

    myelin_scale = (1 - 0.8 * lesion) * (1 - nawm_reduction * nawm)
    mwf_wm = mwf_wm * myelin_scale
    mwf_gm = MWF_GM + (MWF_DEEP_GM - MWF_GM) * deep
    pd_wm = PD["wm"] * (1 + 0.08 * lesion)
    # water of each pool (fraction of a voxel of pure water)
    w_my = wm * pd_wm * mwf_wm + gm * PD["gm"] * mwf_gm
    w_ie = wm * pd_wm * (1 - mwf_wm) + gm * PD["gm"] * (1 - mwf_gm)
    w_csf = csf * PD["csf"]
    pd = w_my + w_ie + w_csf
    safe = np.where(pd > 0, pd, 1.0)
    f_my, f_ie, f_csf = w_my / safe, w_ie / safe, w_csf / safe
    ie_wm = wm * pd_wm * (1 - mwf_wm)
    ie_gm = gm * PD["gm"] * (1 - mwf_gm)
    share = ie_wm / np.where(w_ie > 0, w_ie, 1.0)
    t2_wm = T2["ie_wm"] * (1 + 0.02 * nawm) + (0.110 - T2["ie_wm"]) * lesion
    t2_ie = share * t2_wm + (1 - share) * T2["ie_gm"]
    t1_ie = share * T1["ie_wm"] * (1 + 0.2 * lesion) + (1 - share) * T1["ie_gm"]
    r1 = f_my / T1["my"] + f_ie / np.where(t1_ie > 0, t1_ie, 1.0) + f_csf / T1["csf"]
    t1 = np.where(r1 > 0, 1.0 / np.where(r1 > 0, r1, 1.0), 0.0)  # fast exchange: water-weighted R1
    chi = (wm * CHI["wm_per_mwf"] * mwf_wm + gm * CHI["gm"] * (1 - deep) + chi_iron + CHI["vein"] * vein)
    r2s = wm * (20.0 + 60 * (mwf_wm - 0.10)) + gm * (15.0 + 200 * chi_iron) + csf * 2.0 + 10 * vein
    # diffusion compartments (non-myelin water)
    axon = np.clip(0.45 + 2.0 * (mwf_wm - 0.10), 0.2, 0.7)
    diff_w = ie_wm / np.where(w_ie + w_csf > 0, w_ie + w_csf, 1.0)
    diff_g = ie_gm / np.where(w_ie + w_csf > 0, w_ie + w_csf, 1.0)
    diff_c = 1.0 - diff_w - diff_g
    return {
        "affine": affine, "shape": shape, "lut": lut, "brain": brain.astype(np.float32),
        "wm": wm, "gm": gm, "csf": csf, "labels": labels, "fibre": fibre.astype(np.float32),
        "mwf": f_my, "f_ie": f_ie, "f_csf": f_csf, "pd": pd, "t2_ie": t2_ie, "t1_ie": t1_ie, "t1": t1,
        "tissue_mwf": f_my / np.where(f_my + f_ie > 0, f_my + f_ie, 1.0),
        "chi": chi, "r2s": r2s, "axon": axon, "diff_w": diff_w, "diff_g": diff_g, "diff_c": diff_c,
        "lesion": lesion, "nawm_demyelination": nawm, "deep_gm": deep, "vein": vein,
        "tract_mwf": dict(zip(lut["abbreviation"], np.round(per_tract, 4).tolist())),
    }


class _Sampler:
    """Resample model-grid maps onto an acquisition grid through the subject pose."""

    def __init__(self, model: dict, pose: Pose, affine: np.ndarray, shape):
        self.model, self.shape = model, tuple(shape[:3])
        self.world = _world_coords(affine, shape)
        p_t = pose.to_template(self.world)
        inv = np.linalg.inv(model["affine"])
        self.coords = (inv[:3, :3] @ p_t + inv[:3, 3:4]).astype(np.float32)

    def linear(self, name_or_array) -> np.ndarray:
        """Trilinear resampling (a map name is sampled once and cached; do not modify the result)."""
        if isinstance(name_or_array, str):
            cache = self.__dict__.setdefault("_cache", {})
            if name_or_array not in cache:
                cache[name_or_array] = self.linear(self.model[name_or_array])
            return cache[name_or_array]
        out = ndi.map_coordinates(np.asarray(name_or_array, np.float32), self.coords, order=1, mode="constant",
                                  cval=0.0)
        return out.reshape(self.shape)

    def nearest(self, name_or_array) -> np.ndarray:
        arr = self.model[name_or_array] if isinstance(name_or_array, str) else name_or_array
        idx = np.rint(self.coords).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(arr.shape[:3])[:, None]), axis=0)
        idx = np.where(ok, idx, 0)
        vals = arr[idx[0], idx[1], idx[2]]
        vals[~ok] = 0
        return vals.reshape(self.shape + arr.shape[3:])


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    out = rng.standard_normal(signal.shape, dtype=np.float32)
    out *= sigma
    out += signal
    np.square(out, out=out)
    im = rng.standard_normal(signal.shape, dtype=np.float32)
    im *= sigma
    np.square(im, out=im)
    out += im
    return np.sqrt(out, out=out)


def _vol(data, affine, units: str, description: str, **meta) -> Volume:
    return Volume(np.asarray(data), affine.copy(), None, {"Units": units, "Description": description, **meta}, None)


def _common_truth(s: _Sampler, affine) -> dict:
    brain = s.linear("brain")
    mask = brain >= 0.5
    lab = s.nearest("labels").astype(np.int32) * mask
    wm = s.linear("wm") * mask
    return {
        "mask": _vol(mask, affine, "", "brain mask"),
        "labels": _vol(lab, affine, "", "HCP842-derived tract labels (see the LUT)"),
        "wm": _vol(wm.astype(np.float32), affine, "fraction", "white-matter fraction"),
        "lesion": _vol(s.linear("lesion") >= 0.5, affine, "", "demyelinating lesion mask"),
        "nawm_demyelination": _vol(s.linear("nawm_demyelination") >= 0.5, affine, "",
                                   "normal-appearing white matter with reduced myelin"),
    }


# --------------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------------
def make_phantom(seed: int = 0, size: str = "small", snr: float = 200.0, lesions: bool = False, *,
                 nawm_reduction: float = 0.25, progress=None, cancel=None) -> Phantom:
    """Simulate one subject: four acquisitions plus the truth maps on each acquisition's grid.

    Parameters
    ----------
    seed : int
        Random seed (pose, deformation, B1, per-tract variation, lesions, noise).
    size : {"small", "full"}
        ``"small"``: 4 mm model, coarse acquisitions (a few seconds, for tests);
        ``"full"``: 2 mm model, 2-2.4 mm acquisitions (the demo subject).
    snr : float
        Mean brain signal of the reference volume divided by the noise sigma (``inf``: no noise).
    lesions : bool
        Add demyelinating lesions and one tract of NAWM with MWF reduced by ``nawm_reduction``.
    nawm_reduction : float
        Relative MWF reduction (0-1) in the NAWM-demyelination tract.
    progress, cancel
        See :func:`.progress.step`.

    Returns
    -------
    Phantom
    """
    if size not in SIZES:
        raise InputError(f"size={size!r}: unknown phantom size; choose 'small' or 'full'.")
    snr = float(snr)
    if not snr > 0:
        raise InputError(f"snr={snr}: the signal-to-noise ratio must be positive; give e.g. 50 or 200.")
    if not 0 <= nawm_reduction < 1:
        raise InputError(f"nawm_reduction={nawm_reduction}: give a relative reduction between 0 and 1.")
    seed = int(seed)
    rng = np.random.default_rng(seed)
    cfg = SIZES[size]
    step(progress, cancel, 0.0, "building anatomy")
    model = _model(size, rng, bool(lesions), float(nawm_reduction))
    pose = _pose(rng)
    b1_params = np.r_[rng.uniform(-10, 10, 3) + pose.translation, rng.uniform(-1, 1, 3)]
    phi0_params = rng.uniform(-1, 1, 4)
    noise_rng = np.random.default_rng([seed, 1])
    centre = pose.translation + np.array([0.0, -15.0, 10.0])
    acq, truth = {}, {}

    def sigma_of(ref: np.ndarray, mask: np.ndarray) -> float:
        return float(ref[mask].mean() / snr) if np.isfinite(snr) else 0.0

    def noisy(sig, sigma):
        return sig.astype(np.float32) if sigma == 0 else _rician(sig.astype(np.float32), sigma, noise_rng)

    # ---------------------------------------------------------------- B1 map (own coarse grid)
    aff, shp = acquisition_grid(*cfg["b1"], rotation_deg=(0, 0, 0), center=centre)
    s = _Sampler(model, pose, aff, shp)
    b1_true = _b1_field(s.world, b1_params).reshape(shp)
    b1_meas = (b1_true + 0.01 * noise_rng.standard_normal(shp)) * (s.linear("brain") > 0.05)
    acq["b1"] = _vol(b1_meas.astype(np.float32), aff, "ratio", "transmit B1 map (actual / nominal flip angle)",
                     Modality="MR", MagneticFieldStrength=B0_TESLA)
    truth["b1"] = {"b1": _vol(b1_true.astype(np.float32), aff, "ratio", "true transmit field ratio"),
                   **{k: v for k, v in _common_truth(s, aff).items() if k == "mask"}}

    # ---------------------------------------------------------------- MESE
    step(progress, cancel, 0.1, "multi-echo spin echo")
    aff, shp = acquisition_grid(*cfg["mese"], rotation_deg=(0, 0, 0), center=centre)
    s = _Sampler(model, pose, aff, shp)
    common = _common_truth(s, aff)
    inside = s.linear("brain").ravel() > 0.05
    b1 = _b1_field(s.world, b1_params)
    f = np.stack([s.linear(k).ravel() for k in ("mwf", "f_ie", "f_csf")], axis=1)[inside]
    pd = s.linear("pd").ravel()
    t2ie = np.round(s.linear("t2_ie").ravel()[inside] / 0.0005) * 0.0005
    t2ie = np.where(t2ie > 0, t2ie, T2["ie_wm"])
    t1ie = np.round(s.linear("t1_ie").ravel()[inside] / 0.05) * 0.05
    t1ie = np.where(t1ie > 0, t1ie, T1["ie_wm"])
    n_in = int(inside.sum())
    t2 = np.stack([np.full(n_in, T2["my"]), t2ie, np.full(n_in, T2["csf"])], axis=1)
    t1 = np.stack([np.full(n_in, T1["my"]), t1ie, np.full(n_in, T1["csf"])], axis=1)
    alpha = 180.0 * b1[inside]
    sig = np.zeros((pd.size, MESE_ECHOES), np.float32)
    sig[inside] = S0_SCALE * pd[inside, None] * simulate_mese(f, t2, t1, alpha)
    sig = sig.reshape(shp + (MESE_ECHOES,))
    mask = common["mask"].data
    te = [round(MESE_TE * (i + 1), 6) for i in range(MESE_ECHOES)]
    acq["mese"] = _vol(noisy(sig, sigma_of(sig[..., 0], mask)), aff, "a.u.", "multi-echo spin echo (CPMG)",
                       EchoTime=te, EchoSpacing=MESE_TE, RefocusingFlipAngle=180.0, ExcitationFlipAngle=90.0,
                       RepetitionTime=1.5, MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D",
                       PulseSequenceType="Multi-echo spin echo (CPMG)")
    t2_full = np.zeros(pd.size, np.float32)
    t2_full[inside] = t2ie
    alpha_full = (180.0 * b1).astype(np.float32)
    truth["mese"] = {
        "mwf": _vol((s.linear("mwf") * mask).astype(np.float32), aff, "fraction", "myelin water fraction"),
        "t2_ie": _vol(t2_full.reshape(shp) * mask, aff, "s", "T2 of intra/extra-cellular water"),
        "refocusing_angle": _vol(alpha_full.reshape(shp), aff, "deg", "actual refocusing angle (180 x B1)"),
        "pd": _vol((pd.reshape(shp) * mask).astype(np.float32), aff, "fraction", "proton density (water = 1)"),
        **common,
    }

    # ---------------------------------------------------------------- DWI
    step(progress, cancel, 0.3, "diffusion")
    aff, shp = acquisition_grid(*cfg["dwi"], rotation_deg=(3.0, 0, 0), center=centre, flip_x=True)
    s = _Sampler(model, pose, aff, shp)
    common = _common_truth(s, aff)
    mask = common["mask"].data
    inside = s.linear("brain").ravel() > 0.05
    bvals, bvecs = gradient_scheme()
    rot_vox = aff[:3, :3] / np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    fib_t = s.nearest("fibre").reshape(-1, 3)[inside].astype(float)
    fib = (rot_vox.T @ (pose.rotation @ fib_t.T)).T  # template world -> scanner world -> voxel axes
    fib /= np.maximum(np.linalg.norm(fib, axis=1, keepdims=True), 1e-9)
    fw, fg, fc = (s.linear(k).ravel()[inside] for k in ("diff_w", "diff_g", "diff_c"))
    axon = s.linear("axon").ravel()[inside]
    tot = np.maximum(fw + fg + fc, 1e-6)
    fw, fg, fc = fw / tot, fg / tot, fc / tot
    dki_vox, dki_maps = tissue_dki(fib, fw, fg, fc, axon, b_max=max(DWI_BVALS))
    params = np.zeros((inside.size, 27))
    params[inside] = dki_vox
    s0 = S0_SCALE * s.linear("pd").ravel() * (1 - s.linear("mwf").ravel())
    sig = np.zeros((inside.size, bvals.size), np.float32)
    sig[inside] = simulate_dwi(params[inside], bvals, bvecs, s0=s0[inside])
    sig = sig.reshape(shp + (bvals.size,))
    dwi = _vol(noisy(sig, sigma_of(sig[..., bvals == 0].mean(-1), mask)), aff, "a.u.",
               "multi-shell diffusion-weighted series", EchoTime=0.08, RepetitionTime=4.2,
               MagneticFieldStrength=B0_TESLA, PhaseEncodingDirection="j-")
    dwi.bvals, dwi.bvecs = bvals, bvecs
    acq["dwi"] = dwi
    truth["dwi"] = {**_dki_truth(dki_maps, inside, shp, aff, mask), **common}
    truth["dwi"]["dki_params"] = _vol(params.reshape(shp + (27,)).astype(np.float32), aff, "",
                                      "true DKI parameters (dipy order: evals mm^2/s, evecs, kt)")

    # ---------------------------------------------------------------- GRE
    step(progress, cancel, 0.55, "multi-echo gradient echo")
    aff, shp = acquisition_grid(*cfg["gre"], rotation_deg=(12.0, 0, 4.0), center=centre)
    s = _Sampler(model, pose, aff, shp)
    common = _common_truth(s, aff)
    mask = common["mask"].data
    faff, fshp = fine_grid(aff, shp, 2)
    sf = _Sampler(model, pose, faff, fshp)
    chi_fine = sf.linear("chi")
    local = simulate_field(chi_fine, faff, 2)
    del chi_fine, sf
    step(progress, cancel, 0.7, "background field")
    background = np.zeros(s.world.shape[1])
    for c_t, r in AIR:
        c_s = pose.to_scanner(np.asarray(c_t, float))[:, 0]
        background += sphere_field((s.world - c_s[:, None]).T, r * pose.scale, CHI["air"], (0.0, 0.0, 1.0))
    rel = (s.world - centre[:, None]) / 100.0
    background += 0.30 * rel[0] - 0.20 * rel[1] + 0.25 * rel[2]  # shim residual (ppm per 100 mm)
    background = background.reshape(shp)
    total = local + background
    te = np.array([GRE_TE1 + i * GRE_DTE for i in range(cfg["gre_echoes"])])
    freq = GAMMA_HZ_PER_T * B0_TESLA * 1e-6  # Hz per ppm
    rel = (s.world - centre[:, None]) / 100.0
    phi0 = (0.4 * phi0_params[0] + 0.3 * (phi0_params[1:] @ rel)).reshape(shp)
    mag = S0_SCALE * s.linear("pd")[..., None] * np.exp(-s.linear("r2s")[..., None] * te)
    inside = s.linear("brain") > 0.05
    mag *= inside[..., None]
    phase = 2 * np.pi * freq * total[..., None] * te + phi0[..., None]
    sigma = sigma_of(mag[..., 0], mask)
    cplx = (mag * np.exp(1j * phase)).astype(np.complex64)
    if sigma > 0:
        cplx.real += sigma * noise_rng.standard_normal(cplx.shape, dtype=np.float32)
        cplx.imag += sigma * noise_rng.standard_normal(cplx.shape, dtype=np.float32)
    meta = dict(EchoTime=te.round(6).tolist(), MagneticFieldStrength=B0_TESLA, FlipAngle=GRE_FLIP,
                RepetitionTime=GRE_TR, MRAcquisitionType="3D", ImagingFrequency=round(GAMMA_HZ_PER_T * B0_TESLA / 1e6, 4))
    acq["gre_mag"] = _vol(np.abs(cplx).astype(np.float32), aff, "a.u.", "multi-echo GRE magnitude", **meta)
    acq["gre_phase"] = _vol(np.angle(cplx).astype(np.float32), aff, "rad", "multi-echo GRE phase (wrapped)", **meta)
    truth["gre"] = {
        "chi": _vol((s.linear("chi") * mask).astype(np.float32), aff, "ppm", "magnetic susceptibility (CSF = 0)"),
        "local_field": _vol((local * mask).astype(np.float32), aff, "ppm", "field of the brain's susceptibility"),
        "background_field": _vol(background.astype(np.float32), aff, "ppm", "field of outside sources + shim residual"),
        "total_field": _vol(total.astype(np.float32), aff, "ppm", "local + background field"),
        "r2s": _vol((s.linear("r2s") * mask).astype(np.float32), aff, "1/s", "R2*"),
        **common,
    }

    # ---------------------------------------------------------------- SPGR
    step(progress, cancel, 0.85, "SPGR")
    aff, shp = acquisition_grid(*cfg["spgr"], rotation_deg=(0, -4.0, 0), center=centre)
    s = _Sampler(model, pose, aff, shp)
    common = _common_truth(s, aff)
    mask = common["mask"].data
    b1 = _b1_field(s.world, b1_params).reshape(shp)
    pd = s.linear("pd")
    f_csf = s.linear("f_csf")
    t1ie = s.linear("t1_ie")
    t1ie = np.where(t1ie > 0, t1ie, T1["ie_wm"])
    sig = S0_SCALE * simulate_spgr(pd * (1 - f_csf), s.linear("tissue_mwf"), t1ie, pd * f_csf, SPGR_FLIPS, SPGR_TR, b1)
    sig *= (s.linear("brain") > 0.05)[..., None]
    acq["spgr"] = _vol(noisy(sig, sigma_of(sig.max(-1), mask)), aff, "a.u.", "variable-flip-angle SPGR",
                       FlipAngle=list(SPGR_FLIPS), RepetitionTime=SPGR_TR, EchoTime=0.0025,
                       MagneticFieldStrength=B0_TESLA, MRAcquisitionType="3D")
    t1_true = s.linear("t1")
    truth["spgr"] = {
        "t1": _vol((np.where(mask, t1_true, 0)).astype(np.float32), aff, "s",
                   "T1 (fast-exchange, water-weighted R1 of the pools)"),
        "pd": _vol((pd * mask).astype(np.float32), aff, "fraction", "proton density (water = 1)"),
        "mwf": _vol((s.linear("mwf") * mask).astype(np.float32), aff, "fraction", "myelin water fraction"),
        "b1": _vol(b1.astype(np.float32), aff, "ratio", "true transmit field ratio"),
        **common,
    }
    step(progress, cancel, 1.0, "phantom ready")
    params = {
        "seed": seed, "size": size, "snr": snr, "lesions": bool(lesions), "nawm_reduction": nawm_reduction,
        "pose": {"scale": pose.scale, "rotation": pose.rotation.round(6).tolist(),
                 "translation_mm": pose.translation.round(3).tolist()},
        "tract_mwf": model["tract_mwf"],
    }
    return Phantom(acq=acq, truth=truth, lut=model["lut"], parameters=params)


_DKI_UNITS = {
    "fa": ("fraction", "fractional anisotropy"), "md": ("mm^2/s", "mean diffusivity"),
    "ad": ("mm^2/s", "axial diffusivity"), "rd": ("mm^2/s", "radial diffusivity"),
    "mk": ("", "mean kurtosis"), "ak": ("", "axial kurtosis"), "rk": ("", "radial kurtosis"),
}


def _dki_truth(maps: dict, inside: np.ndarray, shp, aff, mask) -> dict:
    out = {}
    for name, (units, desc) in _DKI_UNITS.items():
        full = np.zeros(inside.size, np.float32)
        full[inside] = np.nan_to_num(maps[name])
        out[name] = _vol(full.reshape(shp) * mask, aff, units, desc)
    return out


# --------------------------------------------------------------------------------------------------
# writing a BIDS-like subject
# --------------------------------------------------------------------------------------------------
def _sidecar(vol: Volume, extra: dict | None = None) -> dict:
    side = {k: v for k, v in vol.metadata.items() if k not in ("Description",)}
    side.update(extra or {})
    return side


def write_phantom(out_dir: str | os.PathLike, seed: int = 0, size: str = "small", snr: float = 200.0,
                  lesions: bool = False, *, progress=None, cancel=None) -> dict[str, Path]:
    """Simulate a phantom and write it as a BIDS-like dataset with its truth.

    Layout::

        OUT/dataset_description.json
        OUT/sub-XX/anat/sub-XX_MESE.nii.gz (+ .json: EchoTime list ...)
        OUT/sub-XX/anat/sub-XX_part-mag_MEGRE.nii.gz, sub-XX_part-phase_MEGRE.nii.gz
        OUT/sub-XX/anat/sub-XX_VFA.nii.gz (FlipAngle list, RepetitionTime)
        OUT/sub-XX/fmap/sub-XX_TB1map.nii.gz
        OUT/sub-XX/dwi/sub-XX_dwi.nii.gz (+ .bval, .bvec, .json)
        OUT/derivatives/truth/sub-XX/<mese|dwi|gre|spgr|b1>/<map>.nii.gz (+ .json with Units)
        OUT/derivatives/truth/tracts.tsv (label lookup table; also beside every labels map)

    ``XX`` is the seed on two digits. Series are stored 4D with list-valued sidecar entries;
    magnitude series as int16 (rounded, signal scale ~1000), phase in radians (float32).

    Returns
    -------
    dict of str to Path
        Acquisition name -> written file.
    """
    from napari_myelin import __version__
    from napari_myelin.io.lut import write_lut
    from napari_myelin.utils.progress import subrange

    out = check_output_folder(out_dir)
    ph = make_phantom(seed=seed, size=size, snr=snr, lesions=lesions, progress=subrange(progress, 0, 0.8),
                      cancel=cancel)
    sub = f"sub-{int(seed):02d}"
    files = {
        "mese": out / sub / "anat" / f"{sub}_MESE.nii.gz",
        "gre_mag": out / sub / "anat" / f"{sub}_part-mag_MEGRE.nii.gz",
        "gre_phase": out / sub / "anat" / f"{sub}_part-phase_MEGRE.nii.gz",
        "spgr": out / sub / "anat" / f"{sub}_VFA.nii.gz",
        "b1": out / sub / "fmap" / f"{sub}_TB1map.nii.gz",
        "dwi": out / sub / "dwi" / f"{sub}_dwi.nii.gz",
    }
    gen = {"Name": "napari-myelin phantom", "Version": __version__,
           "Parameters": {"seed": int(seed), "size": size, "snr": float(snr), "lesions": bool(lesions)}}
    for i, (name, path) in enumerate(files.items()):
        step(progress, cancel, 0.8 + 0.1 * i / len(files), f"writing {path.name}")
        vol = ph.acq[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = vol.data
        if name in INT16_SERIES:  # magnitudes stored as scanners export them (int16)
            data = np.clip(np.rint(data), 0, np.iinfo(np.int16).max).astype(np.int16)
        save_volume(data, path, vol.affine, sidecar=_sidecar(vol, {"GeneratedBy": gen}))
        if name == "dwi":
            np.savetxt(path.with_name(f"{sub}_dwi.bval"), vol.bvals[None], fmt="%g")
            np.savetxt(path.with_name(f"{sub}_dwi.bvec"), vol.bvecs.T, fmt="%.6f")
    truth_root = out / "derivatives" / "truth"
    for modality, maps in ph.truth.items():
        folder = truth_root / sub / modality
        folder.mkdir(parents=True, exist_ok=True)
        for name, vol in maps.items():
            if name == "dki_params":  # large; regenerate with make_phantom when needed
                continue
            data = vol.data.astype(np.uint8) if vol.data.dtype == bool else vol.data
            side = {"Units": vol.metadata.get("Units", ""), "Description": vol.metadata.get("Description", ""),
                    "GeneratedBy": gen, "Grid": f"the grid of the {modality} acquisition"}
            save_volume(data, folder / f"{name}.nii.gz", vol.affine, sidecar=side)
            if name == "labels":
                write_lut(ph.lut, folder / "labels.tsv")
    write_lut(ph.lut, truth_root / "tracts.tsv")
    step(progress, cancel, 0.95, "writing descriptions")
    desc = {"Name": "napari-myelin digital brain phantom", "BIDSVersion": "1.9.0", "DatasetType": "raw",
            "GeneratedBy": [gen], "License": "CC BY-SA 4.0 (derived from HCP842 and MNI ICBM152, see NOTICE)"}
    (out / "dataset_description.json").write_text(json.dumps(desc, indent=2), encoding="utf-8")
    tdesc = dict(desc, Name="napari-myelin phantom ground truth", DatasetType="derivative")
    (truth_root / "dataset_description.json").write_text(json.dumps(tdesc, indent=2), encoding="utf-8")
    (truth_root / "phantom_parameters.json").write_text(json.dumps(ph.parameters, indent=2), encoding="utf-8")
    step(progress, cancel, 1.0, "done")
    return files

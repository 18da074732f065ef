"""Digital brain phantom: one anatomy, five simulated acquisitions, ground truth for every estimator.

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
  thalamus: ellipsoids at MNI positions), a few veins (+0.35 ppm). Each term has one sign, so the GRE
  truth also carries the chi-separation split ``chi = chi_para - chi_dia``: ``chi_para`` (GM, iron,
  veins) and ``chi_dia`` (myelin, as a positive magnitude).
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
* **MTS** (MT-weighted, PD-weighted and T1-weighted SPGR, 6/6/20 deg, TR 28/28/18 ms; BIDS
  ``*_flip-1_mt-on_MTS``, ``*_flip-1_mt-off_MTS``, ``*_flip-2_mt-off_MTS``): a two-pool MT model whose
  bound-pool fraction follows myelin, a Gaussian MT pulse (4 ms, 220 deg, 2 kHz), the same B1
  (:mod:`.mt`); truth ``mtsat``, ``mtr``, ``t1``, ``bpf``. Its noise comes from its own generator, drawn
  after every other acquisition, so the other acquisitions do not depend on it.
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

Modules
-------
:mod:`.constants` (tissue, anatomy landmarks, grids, protocols), :mod:`.geometry` (grids, pose,
resampling), :mod:`.anatomy` (tissue properties on the model grid), :mod:`.signals` (signal equations,
gradient scheme, noise), :mod:`.truth` (DKI of the compartment mixture, truth maps),
:mod:`.acquisitions` (the five acquisitions of one subject), :mod:`.mt` (the MT-weighted trio and its two-pool
MT model), :mod:`.subject` (:class:`Phantom`, :func:`make_phantom`), :mod:`.writer` (:func:`write_phantom`).
"""

from napari_myelin.sims.phantom.constants import (AIR, B0_TESLA, CHI, CSF_DIFFUSIVITY, DEEP_GM, DWI_B0S, DWI_BVALS,
                                                  DWI_DIRS, GAMMA_HZ_PER_T, GM_COMPARTMENTS, GRE_DTE, GRE_FLIP,
                                                  GRE_TE1, GRE_TR, INT16_SERIES, MESE_ECHOES, MESE_TE, MWF_DEEP_GM,
                                                  MWF_GM, MWF_WM_DEFAULT, PD, S0_SCALE, SIZES, SPGR_FLIPS, SPGR_TR,
                                                  T1, T2, TAU_MYELIN, TRACT_MWF, VEINS, WM_EXTRA, WM_INTRA,
                                                  WM_RESTRICTED, WM_RESTRICTED_FRACTION)
from napari_myelin.sims.phantom.geometry import Pose, _world_coords, acquisition_grid, block_mean, fine_grid
from napari_myelin.sims.phantom.mt import MTS_KEYS, bound_saturation, simulate_mts, super_lorentzian
from napari_myelin.sims.phantom.signals import (fibonacci_sphere, gradient_scheme, simulate_dwi, simulate_field,
                                                simulate_mese, simulate_spgr)
from napari_myelin.sims.phantom.subject import Phantom, make_phantom
from napari_myelin.sims.phantom.truth import dki_params_from_tensors, mixture_dki, tissue_dki
from napari_myelin.sims.phantom.writer import write_phantom

# ``_world_coords`` stays reachable as ``phantom._world_coords`` (the tests build reference grids with it).
__all__ = [
    "AIR", "B0_TESLA", "CHI", "CSF_DIFFUSIVITY", "DEEP_GM", "DWI_B0S", "DWI_BVALS", "DWI_DIRS", "GAMMA_HZ_PER_T",
    "GM_COMPARTMENTS", "GRE_DTE", "GRE_FLIP", "GRE_TE1", "GRE_TR", "INT16_SERIES", "MESE_ECHOES", "MESE_TE",
    "MWF_DEEP_GM", "MWF_GM", "MWF_WM_DEFAULT", "PD", "S0_SCALE", "SIZES", "SPGR_FLIPS", "SPGR_TR", "T1", "T2",
    "TAU_MYELIN", "TRACT_MWF", "VEINS", "WM_EXTRA", "WM_INTRA", "WM_RESTRICTED", "WM_RESTRICTED_FRACTION",
    "Phantom", "Pose", "acquisition_grid", "block_mean", "dki_params_from_tensors", "fibonacci_sphere", "fine_grid",
    "gradient_scheme", "make_phantom", "mixture_dki", "simulate_dwi", "simulate_field", "simulate_mese",
    "simulate_spgr", "tissue_dki", "write_phantom",
    "MTS_KEYS", "bound_saturation", "simulate_mts", "super_lorentzian",
]

"""Quantitative susceptibility mapping (QSM) from multi-echo gradient echo, keeping the brain's edge.

Pipeline (each step is a public function usable alone; :func:`fit_qsm` chains them):

1. :func:`phase_to_radians` -- detect the phase scaling (radians, 0..4095 or -4096..4095 integers;
   any other range, or one spanning under a quarter of these, is refused). After the inversion
   :func:`phase_sign_check` checks the sign: high-R2* voxels (veins, iron) must come out paramagnetic.
2. :func:`brain_mask` -- dipy ``median_otsu`` on the echo-combined magnitude, holes filled (or given);
   :func:`signal_mask` drops voxels without measurable phase. :func:`fit_qsm` then crops every array to
   the mask's bounding box (+ margin, fast FFT sizes) once and pastes the maps back at the end.
3. :func:`unwrap_echoes` -- the first echo difference is unwrapped spatially by :func:`laplacian_unwrap`
   (Schofield & Zhu 2003) or :func:`path_unwrap` (scikit-image's 3D quality-guided unwrapper, for
   comparison) and guides unwrapping along TE; :func:`echo_fit` -- magnitude^2-weighted linear fit of
   the unwrapped phase over TE: ``phi_n = phi_0 + 2 pi f TE_n`` -> field ``f`` in Hz
   (:func:`hz_to_ppm` -> ppm of B0).
4. Background field removal: :func:`pdf` (projection onto dipole fields, CG on the normal equations,
   no erosion: the default), :func:`lbv` (Laplacian boundary value, sparse CG; the one boundary voxel
   layer is lost), :func:`vsharp` (variable-radius SHARP, 12 mm -> 1 mm) and :func:`sharp`.
5. Dipole inversion: :func:`tkd` (threshold 0.15, with the truncation-bias correction),
   :func:`tikhonov` (gradient-Tikhonov, CG), :func:`tv_admm` (TV-regularised ADMM with closed-form FFT
   updates, Bilgic et al.). :func:`reference_chi` -- whole-brain mean (default) or CSF.

Conventions: phase ``phi = +2 pi f TE`` (a positive field offset gives a positive phase; pass
``phase_sign=-1`` to :func:`fit_qsm` for the opposite vendor convention); fields in Hz or ppm of B0;
susceptibility in ppm (SI); the dipole kernel and B0 direction from :mod:`napari_myelin.reconst.dipole`.
FFT work uses ``scipy.fft`` (real transforms, single precision, all cores) on the mask's bounding box
plus padding; the dipole kernel and sphere kernels are computed once per grid and reused.

Modules: ``phase`` (input checks, phase scaling, Hz/ppm), ``unwrap`` (unwrapping, echo fit, signal
mask), ``background`` (PDF, LBV, SHARP, V-SHARP), ``inversion`` (TKD, Tikhonov, TV-ADMM, reference),
``metrics`` (challenge 2.0 NRMSE, HFEN, SSIM) and ``pipeline`` (:func:`fit_qsm`, which also returns R2*
from :mod:`napari_myelin.reconst.decay`); the crops, padded FFT grids, gradients and conjugate gradients
are shared with chi-separation in :mod:`napari_myelin.reconst.inverse`. The references are with the code
of each step.
"""

from napari_myelin.reconst.masking import brain_mask
from napari_myelin.reconst.qsm.background import BFR_METHODS, lbv, pdf, sharp, sharp_kernels, vsharp
from napari_myelin.reconst.qsm.inversion import (
    INVERSION_METHODS,
    reference_chi,
    tikhonov,
    tkd,
    tkd_correction,
    tv_admm,
)
from napari_myelin.reconst.qsm.metrics import edge_fraction, qsm_metrics
from napari_myelin.reconst.qsm.phase import (
    GAMMA_BAR_MHZ_PER_T,
    check_inputs,
    PhaseSignWarning,
    hz_to_ppm,
    phase_sign_check,
    phase_sign_result,
    phase_to_radians,
    ppm_to_hz,
)
from napari_myelin.reconst.qsm.pipeline import fit_qsm
from napari_myelin.reconst.qsm.unwrap import (
    UNWRAP_METHODS,
    echo_fit,
    laplacian_unwrap,
    path_unwrap,
    signal_mask,
    unwrap_echoes,
)

__all__ = [
    "BFR_METHODS",
    "GAMMA_BAR_MHZ_PER_T",
    "INVERSION_METHODS",
    "UNWRAP_METHODS",
    "brain_mask",
    "check_inputs",
    "echo_fit",
    "edge_fraction",
    "fit_qsm",
    "hz_to_ppm",
    "laplacian_unwrap",
    "lbv",
    "path_unwrap",
    "pdf",
    "PhaseSignWarning",
    "phase_sign_check",
    "phase_sign_result",
    "phase_to_radians",
    "ppm_to_hz",
    "qsm_metrics",
    "reference_chi",
    "sharp",
    "sharp_kernels",
    "signal_mask",
    "tikhonov",
    "tkd",
    "tkd_correction",
    "tv_admm",
    "unwrap_echoes",
    "vsharp",
]

"""The chi-separation entry point :func:`separate_susceptibility` and its model constants.

Model (Shin et al. 2021). A voxel holds paramagnetic sources (iron; ``chi_para >= 0``) and diamagnetic
sources (myelin; ``chi_neg = -chi_dia <= 0``), in ppm. Their sum is the bulk susceptibility that the
local field sees, while both *increase* the reversible transverse relaxation R2' (static dephasing:
the signal decay depends on the magnitude of the mesoscopic field perturbations, not their sign):

.. math::

    \\delta_{\\mathrm{loc}} = D * (\\chi_{\\mathrm{para}} - \\chi_{\\mathrm{dia}}), \\qquad
    R_2' = R_2^* - R_2 = D_{r+}\\,\\chi_{\\mathrm{para}} + D_{r-}\\,\\chi_{\\mathrm{dia}} ,

with ``D`` the dipole kernel (:mod:`napari_myelin.reconst.dipole`) and ``D_r`` the relaxometric
constants (Hz/ppm = 1/s per ppm). Shin et al. estimated ``D_r+ = D_r- = 137 Hz/ppm`` at 3 T from the
R2' and susceptibility of regions with one dominant source (:data:`DR_3T_HZ_PER_PPM`); in the
static-dephasing regime R2' is proportional to the frequency perturbation, ``gamma B0 |chi|``
(Yablonskiy & Haacke 1994), so the constant is scaled linearly with the field:
``D_r(B0) = 137 B0 / 3 T`` (:func:`relaxometric_constants`). The 114 Hz/ppm used by chi-sepnet is the
same constant calibrated against COSMOS susceptibility instead (pass it as ``relaxometric_constant``).

Convention: **chi_dia is reported as a positive magnitude** (ppm); the diamagnetic susceptibility is
``-chi_dia`` and the bulk susceptibility of the model is ``chi_para - chi_dia``.

References
----------
Shin HG, Lee J, Yun YH, et al. chi-separation: magnetic susceptibility source separation toward iron and
myelin mapping in the brain. NeuroImage 240:118371 (2021).
Yablonskiy DA, Haacke EM. Theory of NMR signal behavior in magnetically inhomogeneous tissues: the static
dephasing regime. MRM 32:749-763 (1994).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.chisep.admm import chisep_admm
from napari_myelin.reconst.dipole import b0_direction
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step, subrange

#: Relaxometric constant D_r (Hz/ppm) at 3 T, paramagnetic = diamagnetic (Shin et al. 2021).
DR_3T_HZ_PER_PPM = 137.0

#: Largest plausible |local field| (ppm): a field in Hz would exceed it.
_MAX_FIELD_PPM = 5.0


def relaxometric_constants(b0: float, value=None) -> tuple[float, float]:
    """``(D_r+, D_r-)`` in Hz/ppm: ``value`` (one number or a pair) or ``137 B0 / 3 T`` for both."""
    if value is None:
        dr = DR_3T_HZ_PER_PPM * float(b0) / 3.0
        return dr, dr
    pair = np.broadcast_to(np.asarray(value, dtype=float), (2,))
    if not np.all(np.isfinite(pair)) or np.any(pair <= 0):
        raise InputError(f"relaxometric_constant: {np.asarray(value).tolist()} is not a positive number of Hz/ppm "
                         "(e.g. 137 at 3 T).")
    return float(pair[0]), float(pair[1])


def r2prime(r2star: np.ndarray, r2: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R2' = R2* - R2`` (1/s) clipped at 0, and where it is known (both rates finite, ``R2 > 0``, mask).

    Raises
    ------
    InputError
        R2 is unknown in the whole mask, or not below R2* in any voxel of it (the maps are swapped, in
        other units, or not of this subject).
    """
    known = mask & np.isfinite(r2star) & np.isfinite(r2) & (r2 > 0)
    if not known.any():
        raise InputError("r2: has no positive value inside the brain mask; give R2 (1/s) of this subject on the "
                         "GRE grid.")
    diff = np.where(known, np.asarray(r2star, np.float64) - np.asarray(r2, np.float64), 0.0)
    if not (diff > 0).any():
        raise InputError("r2: R2 is not below R2* in any brain voxel (R2' = R2* - R2 <= 0 everywhere); give R2 in "
                         "1/s from the spin echo of this subject and R2* from its gradient echo.")
    return np.maximum(diff, 0.0).astype(np.float32), known


def _check_inputs(local_field, r2star, r2, mask, b0) -> tuple[np.ndarray, ...]:
    """The four maps as arrays on one 3D grid (mask as bool), B0 checked; one sentence per bad input."""
    field = np.asarray(local_field, np.float32)
    if field.ndim != 3:
        raise InputError(f"local_field: has {field.ndim} dimensions; give the 3D local field (ppm) of fit_qsm.")
    arrays = []
    for name, a in (("r2star", r2star), ("r2", r2), ("mask", mask)):
        a = np.asarray(a)
        if a.shape != field.shape:
            raise InputError(f"{name}: shape {a.shape} differs from the local field {field.shape}; bring it to the "
                             "GRE grid first (io.resample.resample_like, or registration when the series moved).")
        arrays.append(a)
    m = arrays[2] > 0
    if not m.any():
        raise InputError("mask: is empty; give a brain mask with at least one voxel.")
    peak = float(np.abs(field[m]).max())
    if not np.isfinite(peak) or peak > _MAX_FIELD_PPM:
        raise InputError(f"local_field: |field| reaches {peak:.3g}, not a local field in ppm of B0; give ppm "
                         "(fit_qsm's local_field), not Hz.")
    if b0 is None or not np.isfinite(float(b0)) or not 0 < float(b0) <= 20:
        raise InputError(f"b0: {b0} is not a scanner field; give B0 in tesla (e.g. 3).")
    return field, arrays[0].astype(np.float32), arrays[1].astype(np.float32), m


def separate_susceptibility(
    local_field: np.ndarray,
    r2star: np.ndarray,
    r2: np.ndarray,
    *,
    b0: float,
    mask: np.ndarray,
    relaxometric_constant=None,
    affine: np.ndarray | None = None,
    lam: float = 1e-4,
    weight: float = 1.0,
    max_iter: int = 300,
    tol: float = 3e-3,
    progress=None,
    cancel=None,
) -> Maps:
    """chi-separation: paramagnetic and diamagnetic susceptibility from the local field, R2* and R2.

    Parameters
    ----------
    local_field : ndarray (X, Y, Z)
        Local (tissue) field, ppm of B0 (``fit_qsm(...)["local_field"]``).
    r2star : ndarray (X, Y, Z)
        R2* (1/s) of the same gradient echo (``fit_qsm(...)["r2star"]``).
    r2 : ndarray (X, Y, Z)
        R2 (1/s) from a spin echo, on the GRE grid (e.g. ``1 / gmT2`` of :func:`~napari_myelin.reconst.mwf.myelin_water`
        resampled by world coordinates or registration). Voxels where it is not finite or not positive
        keep the field term only.
    b0 : float
        Main field (T); scales the default relaxometric constant.
    mask : ndarray of bool
        Brain mask (``fit_qsm(...)["mask"]``): the susceptibility is estimated there, 0 elsewhere.
    relaxometric_constant : float or (float, float), optional
        ``D_r`` (Hz/ppm), one value for both sources or ``(D_r+, D_r-)``; default ``137 B0 / 3 T``
        for both (Shin et al. 2021).
    affine : (4, 4) ndarray, optional
        Voxel-to-world affine of the GRE grid: voxel size and the B0 direction (identity if omitted).
    lam : float
        TV weight for 1 mm voxels (divided by the voxel size in mm), as the QSM TV-ADMM default.
    weight : float
        Weight of the R2' term relative to the field term (both in ppm).
    max_iter, tol : int, float
        ADMM stopping rule (:func:`~napari_myelin.reconst.chisep.chisep_admm`).

    Returns
    -------
    Maps
        ``chi_para`` (ppm, >= 0), ``chi_dia`` (ppm, >= 0: the magnitude of the diamagnetic
        susceptibility), ``r2prime`` (1/s, ``R2* - R2`` clipped at 0, as used) and ``mask``.
    """
    field, r2s, r2a, m = _check_inputs(local_field, r2star, r2, mask, b0)
    dr_para, dr_dia = relaxometric_constants(b0, relaxometric_constant)
    step(progress, cancel, 0.01, "R2' = R2* - R2")
    r2p, known = r2prime(r2s, r2a, m)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    para, dia, iters = chisep_admm(field, r2p / dr_para, m, voxel, b0_direction(affine),
                                   weight=np.where(known, np.float32(weight), 0), dia_ratio=dr_dia / dr_para,
                                   lam=lam, max_iter=max_iter, tol=tol, progress=subrange(progress, 0.05, 0.99),
                                   cancel=cancel)
    step(progress, cancel, 1.0, "done")
    negative = int((m & known & (r2s < r2a)).sum())
    params = {"MagneticFieldStrength": float(b0), "RelaxometricConstant_HzPerPpm": [dr_para, dr_dia],
              "VoxelSize_mm": voxel.tolist(), "Lambda": lam, "R2primeWeight": weight, "Iterations": iters,
              "VoxelsWithoutR2": int((m & ~known).sum()), "VoxelsWithNegativeR2primeClipped": negative,
              "ChiDiaConvention": "positive magnitude; the diamagnetic susceptibility is -chi_dia"}
    return Maps(
        {"chi_para": para, "chi_dia": dia, "r2prime": np.where(known, r2p, 0).astype(np.float32),
         "mask": m.astype(np.uint8)},
        units={"chi_para": "ppm", "chi_dia": "ppm", "r2prime": "1/s", "mask": "1"},
        descriptions={
            "chi_para": "paramagnetic susceptibility (iron), ppm >= 0 (chi-separation)",
            "chi_dia": "diamagnetic susceptibility (myelin) as a positive magnitude, ppm; chi_neg = -chi_dia",
            "r2prime": "R2' = R2* - R2 (1/s), clipped at 0, as used by the separation",
            "mask": "voxels with a separated susceptibility",
        },
        method=f"chi-separation (Shin 2021): TV-ADMM with non-negativity, Dr {dr_para:g}/{dr_dia:g} Hz/ppm",
        parameters=params,
    )

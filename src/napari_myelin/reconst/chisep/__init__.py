"""Susceptibility source separation (chi-separation): paramagnetic (iron) and diamagnetic (myelin)
susceptibility from the local field of a multi-echo gradient echo and R2' = R2* - R2.

Entry point :func:`separate_susceptibility` (local field in ppm of B0, R2* and R2 in 1/s on one grid)
-> ``chi_para`` and ``chi_dia`` (ppm, both >= 0; the diamagnetic susceptibility is ``-chi_dia``) and
``r2prime`` (1/s). The model and its constants are in ``separation`` (Shin et al. 2021; relaxometric
constant 137 Hz/ppm at 3 T, scaled with B0), the regularised solver in ``admm`` (:func:`chisep_admm`:
TV-regularised ADMM with closed-form k-space and per-voxel updates and non-negativity). The local field
and R2* come from :func:`napari_myelin.reconst.qsm.fit_qsm`, R2 from a spin echo (the geometric-mean T2
of :func:`napari_myelin.reconst.mwf.myelin_water`); this package imports neither estimator: the dipole
kernel and the FFT building blocks are shared (:mod:`napari_myelin.reconst.dipole`,
:mod:`napari_myelin.reconst.inverse`).
"""

from napari_myelin.reconst.chisep.admm import box_qp, chisep_admm
from napari_myelin.reconst.chisep.separation import (
    DR_3T_HZ_PER_PPM,
    r2prime,
    relaxometric_constants,
    separate_susceptibility,
)

__all__ = ["DR_3T_HZ_PER_PPM", "box_qp", "chisep_admm", "r2prime", "relaxometric_constants",
           "separate_susceptibility"]

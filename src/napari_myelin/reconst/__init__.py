"""The estimators, one module (or sub-package) each with one public entry point:
:mod:`.mwf` (myelin water fraction, multi-echo spin echo), :mod:`.dki` (diffusion kurtosis),
:mod:`.qsm` (susceptibility), :mod:`.qpm` (VFA T1/PD and the QPM myelin map), :mod:`.mtsat` (MTsat and MTR),
:mod:`.chisep` (chi-separation: paramagnetic and diamagnetic susceptibility).
Shared physics and numerics sit beside them (:mod:`.epg`, :mod:`.nnls`, :mod:`.dipole`, :mod:`.masking`,
:mod:`.exchange`, :mod:`.transmit`, :mod:`.inverse` (FFT grids, gradients, conjugate gradients),
:mod:`.decay` (mono-exponential R2*, R2));
an estimator never imports another estimator.
"""

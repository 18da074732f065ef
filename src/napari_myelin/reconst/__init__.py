"""The estimators, one module (or sub-package) each with one public entry point:
:mod:`.mwf` (myelin water fraction, multi-echo spin echo), :mod:`.dki` (diffusion kurtosis),
:mod:`.qsm` (susceptibility), :mod:`.qpm` (VFA T1/PD and the QPM myelin map).
Shared physics and numerics sit beside them (:mod:`.epg`, :mod:`.nnls`, :mod:`.dipole`, :mod:`.masking`);
an estimator never imports another estimator.
"""

r"""Diffusion kurtosis imaging (DKI): FA, MD, AD, RD, MK, AK, RK, KFA and MKT, vectorised over voxels.

The log signal of each voxel is fitted by linear least squares (OLS, or WLS -- the default -- with
weights from a first OLS prediction) to the diffusion tensor :math:`D` (mm^2/s) and the kurtosis
tensor :math:`W` (dimensionless), reproducing ``dipy.reconst.dki.DiffusionKurtosisModel`` of dipy
1.12.1 step by step, and the analytical scalar maps of its Cython routines are computed (Tabesh et al.
2011). Unlike dipy the whole computation runs on arrays of voxels (numpy, batched normal equations and
eigen-decompositions), in chunks of bounded memory, with progress and cancellation.

Modules: ``protocol`` (diffusion table checks, shells, design matrix), ``tensor`` (the model and its
least-squares fit), ``elliptic`` (Carlson's integrals, Tabesh's F and G functions), ``metrics`` (FA,
MK, AK, RK, MKT, KFA) and ``fit`` (:func:`fit_dki`: preprocessing, mask, chunked fit, maps); the
equations and references are with the code of each.
"""

from napari_myelin.reconst.dki.elliptic import carlson_rd, carlson_rf
from napari_myelin.reconst.dki.fit import MAP_DESCRIPTIONS, MAP_UNITS, automatic_mask, fit_dki, preprocess
from napari_myelin.reconst.dki.metrics import (
    KT_INDICES,
    MAX_KURTOSIS,
    MIN_KURTOSIS,
    fractional_anisotropy,
    full_kurtosis_tensor,
    kurtosis_fa,
    kurtosis_maps,
    rotated_kurtosis,
)
from napari_myelin.reconst.dki.protocol import check_protocol, design_matrix, shell_values
from napari_myelin.reconst.dki.tensor import MIN_SIGNAL, fit_dki_params

__all__ = [
    "KT_INDICES",
    "MAP_DESCRIPTIONS",
    "MAP_UNITS",
    "MAX_KURTOSIS",
    "MIN_KURTOSIS",
    "MIN_SIGNAL",
    "automatic_mask",
    "carlson_rd",
    "carlson_rf",
    "check_protocol",
    "design_matrix",
    "fit_dki",
    "fit_dki_params",
    "fractional_anisotropy",
    "full_kurtosis_tensor",
    "kurtosis_fa",
    "kurtosis_maps",
    "preprocess",
    "rotated_kurtosis",
    "shell_values",
]

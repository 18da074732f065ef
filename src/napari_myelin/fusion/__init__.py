"""The integrated myelin map: CNN fusion of MWF, FA, MK, the QPM myelin map and (optionally) QSM into one
map in MWF (%), with its per-voxel uncertainty.

A compact 3D U-Net (``FusionNet``, two resolution levels, ~10^5 parameters) reads the quantitative
maps on one grid, each channel normalised with the statistics stored in the model card, together with
the brain mask and, for every optional channel (QSM), a *presence flag* channel. Training drops the
optional channel at random (its normalised values set to 0 **and** its flag to 0), so a missing QSM is
an explicit, trained-for condition rather than a silent zero. The network predicts a per-voxel gain
:math:`g_\\theta` and offset :math:`b_\\theta` applied to the input MWF averaged over a small Gaussian
neighbourhood,

.. math:: \\mathrm{iMWF}(\\%) = (1 + g_\\theta(\\tilde x))\\,100\\,\\overline{\\mathrm{MWF}}_{in} + b_\\theta(\\tilde x),

and the per-voxel uncertainty is the calibrated standard deviation of ``n_samples`` Monte-Carlo dropout
passes. Weights are stored with :mod:`safetensors` (never pickle) beside a JSON model card of the same
stem (``W.safetensors`` + ``W.json``).

The package, from the network to its training:

* :mod:`.network`: :func:`make_net` (the U-Net), :func:`n_parameters`, :func:`skip_mwf` (the MWF the
  gain and offset apply to);
* :mod:`.card`: channels and their units, :class:`FusionModel` (network + card), :func:`new_model`,
  :func:`default_weights_path`, :func:`card_path`;
* :mod:`.weights`: :func:`save_model`, :func:`load_model` and training checkpoints (:func:`save_checkpoint`);
* :mod:`.inputs`: :func:`check_grids`, :func:`detect_mwf_unit`, :func:`prepare_inputs` (unit checks and
  normalisation);
* :mod:`.inference`: :func:`predict` (mean and MC-dropout SD), :func:`fuse`, :func:`fuse_native`;
* :mod:`.subjects`: :class:`FusionSubject`, :func:`normalisation_stats`;
* :mod:`.evaluation`: :func:`evaluate_rmse`, :func:`calibrate_uncertainty`, the regression baselines
  (:func:`fit_regression`, :func:`apply_regression`) and :func:`subject_metrics`;
* :mod:`.training`: :func:`train_fusion`.

References
----------
Ronneberger O, Fischer P, Brox T. U-Net. MICCAI 2015 (3D variant: Cicek et al. 2016).
Gal Y, Ghahramani Z. Dropout as a Bayesian approximation. ICML 2016.
MacKay A et al. In vivo visualization of myelin water in brain by magnetic resonance. MRM 1994.
"""

from __future__ import annotations

from napari_myelin.fusion.card import (
    CARD_FORMAT,
    CHANNEL_UNITS,
    CHANNELS,
    MODEL_NAME,
    OPTIONAL_CHANNELS,
    FusionModel,
    card_path,
    default_weights_path,
    new_model,
)
from napari_myelin.fusion.evaluation import (
    apply_regression,
    calibrate_uncertainty,
    evaluate_rmse,
    fit_regression,
    subject_metrics,
)
from napari_myelin.fusion.inference import fuse, fuse_native, predict
from napari_myelin.fusion.inputs import check_grids, detect_mwf_unit, prepare_inputs
from napari_myelin.fusion.network import make_net, n_parameters, skip_mwf
from napari_myelin.fusion.subjects import FusionSubject, normalisation_stats
from napari_myelin.fusion.training import train_fusion
from napari_myelin.fusion.weights import load_model, save_checkpoint, save_model

__all__ = [
    "CARD_FORMAT",
    "CHANNEL_UNITS",
    "CHANNELS",
    "MODEL_NAME",
    "OPTIONAL_CHANNELS",
    "FusionModel",
    "FusionSubject",
    "apply_regression",
    "calibrate_uncertainty",
    "card_path",
    "check_grids",
    "default_weights_path",
    "detect_mwf_unit",
    "evaluate_rmse",
    "fit_regression",
    "fuse",
    "fuse_native",
    "load_model",
    "make_net",
    "n_parameters",
    "new_model",
    "normalisation_stats",
    "predict",
    "prepare_inputs",
    "save_checkpoint",
    "save_model",
    "skip_mwf",
    "subject_metrics",
    "train_fusion",
]

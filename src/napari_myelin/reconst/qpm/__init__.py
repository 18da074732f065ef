"""Quantitative parameter mapping (QPM) from spoiled gradient echo (SPGR) series.

T1 and proton density (PD) from a variable-flip-angle (VFA) SPGR series (DESPOT1), a myelin map
without any magnetisation-transfer pulse, and its calibration to myelin water fraction (MWF).

Modules
-------
:mod:`.signal`
    SPGR forward models: Ernst equation (:func:`spgr_signal`) and two exchanging pools
    (:func:`spgr_two_pool_signal`), the default pool parameters and their references.
:mod:`.inputs`
    The protocol (:func:`spgr_protocol`, :func:`check_protocol`), :func:`load_spgr`,
    :func:`mask_from_map` and the checks of signals, B1 map and masks.
:mod:`.vfa`
    :func:`fit_vfa`: T1, M0, PD and MTV (linear DESPOT1 + Levenberg-Marquardt, PD normalised to CSF).
:mod:`.myelin`
    :func:`myelin_map`: the QPM myelin map (two-pool variable projection, or R1/PD mixing).
:mod:`.calibration`
    :func:`fit_mwf_calibration` and :class:`MwfCalibration`: quadratic calibration to MWF (%).
:mod:`.estimate`
    :func:`qpm`, the one entry point: :func:`fit_vfa` then :func:`myelin_map` on one SPGR series.
"""

from __future__ import annotations

from napari_myelin.reconst.qpm.calibration import CalibrationResult, MwfCalibration, fit_mwf_calibration
from napari_myelin.reconst.qpm.estimate import qpm
from napari_myelin.reconst.qpm.inputs import check_protocol, load_spgr, mask_from_map, spgr_protocol
from napari_myelin.reconst.qpm.myelin import PD_TISSUE, T1_FREE_WATER, myelin_map
from napari_myelin.reconst.qpm.signal import T1_IE, T1_MYELIN, TAU_MYELIN, spgr_signal, spgr_two_pool_signal
from napari_myelin.reconst.qpm.vfa import fit_vfa
from napari_myelin.utils.errors import InputError  # re-exported: callers catch ``qpm.InputError``

__all__ = [
    "CalibrationResult",
    "InputError",
    "MwfCalibration",
    "PD_TISSUE",
    "T1_FREE_WATER",
    "T1_IE",
    "T1_MYELIN",
    "TAU_MYELIN",
    "check_protocol",
    "fit_mwf_calibration",
    "fit_vfa",
    "load_spgr",
    "mask_from_map",
    "myelin_map",
    "qpm",
    "spgr_protocol",
    "spgr_signal",
    "spgr_two_pool_signal",
]

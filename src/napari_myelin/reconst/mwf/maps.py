"""Myelin water maps as the command line, widget and pipeline use them: the fit and its partition in one
call (:func:`myelin_water`), fractions in percent, the automatic brain mask, and the decay predicted by a
fitted distribution (for plots of one voxel)."""

from __future__ import annotations

import math

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.epg import epg_decay_curve
from napari_myelin.reconst.mwf.parts import _window_index, t2_parts
from napari_myelin.reconst.mwf.t2dist import fit_t2_distribution
from napari_myelin.utils.errors import InputError


def predict_decay(distribution, alpha, echo_times, t2_times, *, t1=1.0, refocusing_control_angle=180.0):
    """Decay predicted by a T2 distribution at refocusing angle ``alpha`` (for plots of one voxel).

    Returns ``S_i = sum_j d_j EPG_i(T2_j, alpha)``, shape ``(..., n_TE)`` for ``distribution (..., n_T2)``
    and ``alpha (...)``.
    """
    te = np.asarray(echo_times, dtype=np.float64).ravel()
    t2 = np.asarray(t2_times, dtype=np.float64).ravel()
    alpha = np.asarray(alpha, dtype=np.float64)
    basis = epg_decay_curve(te.size, te[0], t2, t1, alpha[..., None], refocusing_control_angle)  # (..., nT2, nTE)
    return np.einsum("...j,...ji->...i", np.asarray(distribution, dtype=np.float64), basis)


def myelin_water(signal, echo_times, *, sp_window=(0.01, 0.04), mp_window=(0.04, 0.2), **fit_kwargs) -> Maps:
    """T2 distributions and their partition in one call (what the CLI, widget and pipeline run).

    Calls :func:`fit_t2_distribution` (``fit_kwargs`` are its keyword parameters; ``mask="auto"``
    uses :func:`automatic_mask`) then :func:`t2_parts`. Returns every map of both (``mwf``/``iewf`` as fractions); windows are
    validated before the (long) fit.
    """
    t2 = np.logspace(math.log10(fit_kwargs.get("t2_range", (0.01, 2.0))[0]),
                     math.log10(fit_kwargs.get("t2_range", (0.01, 2.0))[1]), 3)
    _window_index(t2, sp_window, "sp_window")
    _window_index(t2, mp_window, "mp_window")
    if isinstance(fit_kwargs.get("mask"), str):
        if fit_kwargs["mask"] != "auto":
            raise InputError(f"mask: '{fit_kwargs['mask']}' is not a mask; give an array, None or 'auto'.")
        fit_kwargs["mask"] = automatic_mask(signal)
    fit = fit_t2_distribution(signal, echo_times, **fit_kwargs)
    parts = t2_parts(fit, sp_window=sp_window, mp_window=mp_window)
    arrays = dict(parts.arrays)
    arrays.update({k: v for k, v in fit.arrays.items() if k != "gmt2"})
    arrays["gmt2"] = fit["gmt2"]
    units = dict(fit.units, **parts.units)
    desc = dict(fit.descriptions, **parts.descriptions)
    return Maps(arrays, units, desc, method=fit.method + " + T2partSEcorr", parameters=parts.parameters)


def to_percent(maps: Maps, names=("mwf", "iewf")) -> Maps:
    """A copy of ``maps`` with the given fraction maps in percent (units ``"%"``), as layers and files show them."""
    arrays = dict(maps.arrays)
    units = dict(maps.units)
    for n in names:
        if n in arrays:
            arrays[n] = 100.0 * np.asarray(arrays[n])
            units[n] = "%"
    return Maps(arrays, units, dict(maps.descriptions), method=maps.method, parameters=dict(maps.parameters))


def automatic_mask(signal) -> np.ndarray:
    """Brain mask of a multi-echo series: median-Otsu on the echoes' root-sum-of-squares (see
    :func:`napari_myelin.reconst.masking.brain_mask`)."""
    from napari_myelin.reconst.masking import brain_mask

    sig = np.nan_to_num(np.asarray(signal, dtype=np.float64))
    if sig.ndim != 4:
        raise InputError("signal: an automatic brain mask needs a 4D multi-echo image; give a mask instead.")
    return brain_mask(sig)

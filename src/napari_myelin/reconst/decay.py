"""Mono-exponential decay rates of multi-echo magnitude series: R2* of a gradient echo, R2 of a spin echo.

The signal of echo ``n`` is modelled as ``S_n = S_0 exp(-R TE_n)`` (``R`` in 1/s, ``TE`` in s). Taking
logarithms gives a straight line, fitted by weighted least squares (:func:`decay_rate`),

.. math::

    \\hat R = -\\frac{\\sum_n w_n (TE_n - \\overline{TE}_w)(\\ln S_n - \\overline{\\ln S}_w)}
                    {\\sum_n w_n (TE_n - \\overline{TE}_w)^2}, \\qquad w_n = S_n^2 ,

the weights being the inverse variance of ``ln S_n`` for Gaussian noise of standard deviation
``sigma`` (``var ln S ~ sigma^2 / S^2``). **Noise-floor guard**: a magnitude image is Rician, and
echoes that have decayed to the noise floor are biased upwards (``E|S| -> sigma sqrt(pi/2)`` as the
signal vanishes), which flattens the fitted decay. Echoes are therefore used only while they stay above
``floor * sigma`` (the first echo that falls below ends the series; the first two echoes are always
used), with ``sigma`` given or estimated from the background outside the brain
(:func:`background_sigma`: the median of a Rayleigh distribution is ``sigma sqrt(2 ln 2)``).

References
----------
Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. MRM 34:910-914 (1995).
Pei M et al. Algorithm for fast monoexponential fitting based on auto-regression on linear operations
(ARLO) of data. MRM 73:843-850 (2015) (log-linear and weighted log-linear R2* fits compared).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.utils.errors import InputError

#: Rayleigh median / sigma: ``sqrt(2 ln 2)``.
_RAYLEIGH_MEDIAN = float(np.sqrt(2.0 * np.log(2.0)))


def background_sigma(first_echo: np.ndarray, mask: np.ndarray, *, min_voxels: int = 1000) -> float:
    """Noise standard deviation of a magnitude image from its background (``0`` when it has none).

    ``sigma = median(|S| outside mask) / sqrt(2 ln 2)``: the background of a magnitude image is Rayleigh
    distributed, and the median is robust to the scalp and skull that a brain mask leaves outside.
    Fewer than ``min_voxels`` background voxels, or a zero-filled background, give ``0`` (no guard).
    """
    outside = np.asarray(first_echo, dtype=np.float32)[~np.asarray(mask, bool)]
    if outside.size < min_voxels:
        return 0.0
    return float(np.median(outside)) / _RAYLEIGH_MEDIAN


def decay_rate(
    signal: np.ndarray,
    echo_times,
    mask: np.ndarray | None = None,
    *,
    noise_sigma: float = 0.0,
    floor: float = 3.0,
    name: str = "magnitude",
) -> np.ndarray:
    """Mono-exponential decay rate (1/s) of a multi-echo magnitude series, weighted log-linear fit.

    Parameters
    ----------
    signal : ndarray (..., E)
        Magnitudes, echoes last (any scale).
    echo_times : E floats
        Echo times (s), increasing.
    mask : ndarray of bool (...), optional
        Voxels to fit (all if omitted); the rate is 0 elsewhere.
    noise_sigma : float
        Gaussian noise standard deviation of the real and imaginary channels (signal units); echoes below
        ``floor * noise_sigma`` end the fitted series. ``0`` disables the guard.
    floor : float
        Noise-floor guard in units of ``noise_sigma`` (3: the Rician bias of ``ln S`` stays below ~6 %).
    name : str
        What the signal is, for error messages (e.g. the file name).

    Returns
    -------
    ndarray (...), float32
        ``R`` (1/s): R2* for a gradient echo, R2 for a spin echo train.

    Raises
    ------
    InputError
        Fewer than two echoes, or echo times not matching the echoes.
    """
    sig = np.asarray(signal, dtype=np.float32)
    te = np.atleast_1d(np.asarray(echo_times, dtype=np.float64))
    if sig.ndim < 2 or sig.shape[-1] < 2:
        raise InputError(f"{name}: a decay rate needs at least two echoes (echoes on the last axis); "
                         "give the whole multi-echo series.")
    if te.size != sig.shape[-1]:
        raise InputError(f"{name}: {te.size} echo times were given for {sig.shape[-1]} echoes; give one TE (s) per echo.")
    sel = np.ones(sig.shape[:-1], bool) if mask is None else np.asarray(mask, bool)
    s = sig[sel]
    rate = np.empty(s.shape[0], np.float32)
    for i in range(0, s.shape[0], _CHUNK):
        rate[i:i + _CHUNK] = _log_linear(s[i:i + _CHUNK], te, np.float32(floor * noise_sigma))
    out = np.zeros(sig.shape[:-1], np.float32)
    out[sel] = rate
    return out


#: Voxels per batch of the fit (bounds the float64 temporaries to a few tens of MB).
_CHUNK = 262144


def _log_linear(s: np.ndarray, te: np.ndarray, threshold: np.float32) -> np.ndarray:
    """Weighted log-linear decay rate of voxels ``s`` (N, E), echoes below ``threshold`` cut off."""
    keep = np.cumprod(s > threshold, axis=-1).astype(bool) if threshold > 0 else s > 0
    keep[:, :2] = True
    w = np.where(keep, s.astype(np.float64) ** 2, 0.0)
    w[:, :2] = np.maximum(w[:, :2], 1e-30)  # a voxel without signal gets a flat (zero-rate) two-echo fit
    y = np.log(np.maximum(s, np.float32(1e-30))).astype(np.float64)
    sw = w.sum(-1, keepdims=True)
    t = te - (w * te).sum(-1, keepdims=True) / sw
    return -(w * t * (y - (w * y).sum(-1, keepdims=True) / sw)).sum(-1) / (w * t * t).sum(-1)

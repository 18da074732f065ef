"""Phase unwrapping and echo combination: unwrapped phase (rad) -> total field (Hz).

:func:`unwrap_echoes` unwraps the first echo difference spatially (:func:`laplacian_unwrap`,
Schofield & Zhu 2003, or :func:`path_unwrap`, scikit-image's quality-guided unwrapper) and uses it to
guide the unwrapping along TE; :func:`echo_fit` fits ``phi_n = phi_0 + 2 pi f TE_n`` over echoes,
weighted by magnitude^2, for the field ``f`` in Hz. :func:`signal_mask` keeps the voxels whose field
is measurable.

References
----------
Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric applications. Opt Lett 28:1194 (2003).
Ghiglia DC, Romero LA. Robust two-dimensional weighted and unweighted phase unwrapping that uses fast
transforms and iterative methods. J Opt Soc Am A 11:107-117 (1994).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from napari_myelin.reconst.inverse import _Grid, _voxel
from napari_myelin.utils.errors import InputError

UNWRAP_METHODS = ("laplacian", "path")


def _lap_periodic(x: np.ndarray, voxel) -> np.ndarray:
    """7-point discrete Laplacian (1/mm^2) with periodic boundaries over the first three axes."""
    v = _voxel(voxel)
    out = x * np.float32(-2.0 * (1.0 / v**2).sum())
    for axis in range(3):
        w = np.float32(1.0 / v[axis] ** 2)
        out += w * np.roll(x, 1, axis=axis)
        out += w * np.roll(x, -1, axis=axis)
    return out


def _wrapped_lap(phase: np.ndarray, voxel) -> np.ndarray:
    """Divergence of the wrapped forward differences: ``sum_a (W d_a(x) - W d_a(x - e_a)) / h_a^2``,
    ``W`` wrapping to [-pi, pi) (periodic grid). Equals ``L phi`` exactly where the true neighbour
    differences are below pi (Ghiglia & Romero's least-squares unwrapping right-hand side)."""
    v = _voxel(voxel)
    out = np.zeros(phase.shape, np.float32)
    two_pi = np.float32(2 * np.pi)
    for axis in range(3):
        d = np.roll(phase, -1, axis=axis)
        d -= phase
        d -= two_pi * np.round(d / two_pi)
        d *= np.float32(1.0 / v[axis] ** 2)
        out += d
        out -= np.roll(d, 1, axis=axis)
    return out


def laplacian_unwrap(phase: np.ndarray, voxel_size_mm=1.0, *, pad=0, variant: str = "sin") -> np.ndarray:
    """Laplacian phase unwrapping (Schofield & Zhu 2003), 3D or 4D (echoes last).

    ``phi_u = L^-1[ cos(phi) L sin(phi) - sin(phi) L cos(phi) ]`` with ``L`` the 7-point discrete
    Laplacian (periodic on the grid, DC set to 0). The result equals the true phase up to a harmonic
    function (removed later by background field removal) and a constant; the discrete identity
    underestimates steep phase (neighbour differences ``d`` enter as ``sin d``), which also damps the
    noise-only phase outside the head.

    With ``pad=0`` (default) ``L sin`` and ``L cos`` are computed in image space (exactly the periodic
    stencil) and only ``L^-1`` needs FFTs: one forward and one inverse real FFT per echo, all echoes
    in one batched call (float32, all cores). With ``pad > 0`` the grid is zero-padded and every
    Laplacian is applied in k-space.

    ``variant="wrapped"`` replaces the right-hand side by the divergence of the wrapped neighbour
    differences (:func:`_wrapped_lap`, Ghiglia & Romero 1994): exact for differences below pi, no
    ``sin d`` damping, but noise outside the object enters at full strength (``pad=0`` only).
    """
    if variant not in ("sin", "wrapped"):
        raise InputError(f"variant: {variant!r} is not 'sin' or 'wrapped'.")
    phase = np.asarray(phase, dtype=np.float32)
    if phase.ndim not in (3, 4):
        raise InputError(f"phase: has {phase.ndim} dimensions; unwrapping needs a 3D or 4D (echoes last) phase.")
    if not (isinstance(pad, (int, np.integer)) and pad == 0):
        if phase.ndim == 4:
            return np.stack([laplacian_unwrap(phase[..., i], voxel_size_mm, pad=pad)
                             for i in range(phase.shape[-1])], -1)
        g = _Grid(phase.shape, pad)
        lap = g.lap_symbol(voxel_size_mm)
        s, c = np.sin(phase), np.cos(phase)
        rhs = g.fft(c * g.ifft(g.fft(s) * lap) - s * g.ifft(g.fft(c) * lap))
    else:
        g = _Grid(phase.shape[:3], 0)
        lap = g.lap_symbol(voxel_size_mm)
        if variant == "wrapped":
            rhs = _wrapped_lap(phase, voxel_size_mm)
        else:
            s, c = np.sin(phase), np.cos(phase)
            rhs = c * _lap_periodic(s, voxel_size_mm)
            rhs -= s * _lap_periodic(c, voxel_size_mm)
            del s, c
        rhs = sfft.rfftn(rhs, axes=(0, 1, 2), workers=g.workers)
        if phase.ndim == 4:
            lap = lap[..., None]
    inv = np.zeros(lap.shape, np.float32)
    nz = lap != 0
    inv[nz] = 1.0 / lap[nz]
    rhs *= inv
    out = sfft.irfftn(rhs, s=g.full, axes=(0, 1, 2), workers=g.workers)
    return np.ascontiguousarray(out[g.sl]).astype(np.float32, copy=False)


def path_unwrap(phase: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Quality-guided 3D unwrapping by scikit-image (Herraez et al. reliability sorting), per echo."""
    from skimage.restoration import unwrap_phase

    phase = np.asarray(phase, dtype=np.float64)
    if phase.ndim == 4:
        return np.stack([path_unwrap(phase[..., i], mask) for i in range(phase.shape[-1])], -1)
    if mask is not None:
        out = unwrap_phase(np.ma.array(phase, mask=~np.asarray(mask, bool)))
        return np.asarray(out.filled(0.0), dtype=np.float32)
    return unwrap_phase(phase).astype(np.float32)


def _wrap(x: np.ndarray) -> np.ndarray:
    """Wrap to [-pi, pi) (float32)."""
    two_pi = np.float32(2 * np.pi)
    x = np.asarray(x, np.float32)
    return x - two_pi * np.round(x / two_pi)


def unwrap_echoes(phase: np.ndarray, echo_times, mask: np.ndarray, voxel_size_mm=1.0,
                  method: str = "laplacian") -> np.ndarray:
    """Unwrap a multi-echo phase series along TE, guided by a spatially unwrapped echo difference.

    1. ``dphi = W(phi_2 - phi_1)`` (``W`` wraps; the echo difference has no transmit/receive phase
       offset ``phi_0`` and the shortest time, so the least wrapping); unwrapped spatially
       (:func:`laplacian_unwrap` or :func:`path_unwrap`), its constant aligned to the wrapped data
       (median over the mask): the guide field ``f_g = dphi_u / (2 pi dTE)`` (Hz).
    2. Along TE: ``psi_1 = 0``, ``psi_n = psi_{n-1} + x_n + W(phi_n - phi_{n-1} - x_n)`` with the
       guide step ``x_n = 2 pi f_g (TE_n - TE_{n-1})``.

    ``psi_n`` equals the true ``phi_n - phi_1`` wherever the guide is within ``1 / (2 dTE)`` (100 Hz
    at 5 ms spacing) of the true field: the spatial unwrapping's harmonic error and ``sin d`` damping
    (see :func:`laplacian_unwrap`) no longer reach the field map, only its gross failures would. The
    echo fit (:func:`echo_fit`) of ``psi`` gives the field (the unknown ``phi_1`` goes to the intercept).

    Returns
    -------
    ndarray (X, Y, Z, E)
        ``psi`` (rad), float32.
    """
    phase = np.asarray(phase, np.float32)
    te = np.asarray(echo_times, float).ravel()
    if phase.ndim != 4 or phase.shape[-1] < 2 or te.size != phase.shape[-1]:
        raise InputError("phase: temporal unwrapping needs a 4D phase with at least two echoes and one TE per echo.")
    mask = np.asarray(mask, bool)
    dphi = _wrap(phase[..., 1] - phase[..., 0])
    if method == "laplacian":
        guide = laplacian_unwrap(dphi, voxel_size_mm)
    elif method == "path":
        guide = path_unwrap(dphi, mask)
    else:
        raise InputError(f"unwrap: {method!r} is not one of {', '.join(UNWRAP_METHODS)}.")
    guide += np.float32(np.median(_wrap(dphi - guide)[mask]))
    rate = guide / np.float32(te[1] - te[0])  # rad/s
    psi = np.zeros(phase.shape, np.float32)
    for n in range(1, te.size):
        x = rate * np.float32(te[n] - te[n - 1])
        psi[..., n] = psi[..., n - 1] + x + _wrap(phase[..., n] - phase[..., n - 1] - x)
    return psi


def signal_mask(magnitude: np.ndarray, echo_times, mask: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Voxels of ``mask`` whose field is measurable: the echo-fit precision ``sqrt(sum_n m_n^2 (TE_n -
    mean TE)^2)`` (``m_n TE_n`` for one echo) above ``fraction`` of its 99th percentile in the mask.
    Voxels without signal have no phase (random values that background removal would try to fit)."""
    mag = np.asarray(magnitude, np.float32)
    mag = mag[..., None] if mag.ndim == 3 else mag
    te = np.asarray(echo_times, float).ravel()
    tc = (te - te.mean()) if te.size > 1 else te
    prec = np.sqrt((mag * mag) @ (tc * tc).astype(np.float32))
    mask = np.asarray(mask, bool)
    top = float(np.percentile(prec[mask], 99)) if mask.any() else 0.0
    return mask & (prec > fraction * top)


def _align_echo_offsets(unwrapped: np.ndarray, echo_times: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Remove per-echo global 2 pi offsets left by spatial unwrapping (temporal consistency)."""
    out = unwrapped.copy()
    te = echo_times
    for n in range(1, out.shape[-1]):
        if n == 1:
            pred = out[..., 0]  # within the brain the second echo differs by much less than pi on average
        else:
            slope = (out[..., n - 1] - out[..., n - 2]) / (te[n - 1] - te[n - 2])
            pred = out[..., n - 1] + slope * (te[n] - te[n - 1])
        k = np.round(np.median((out[..., n] - pred)[mask]) / (2 * np.pi))
        out[..., n] -= 2 * np.pi * k
    return out


def echo_fit(unwrapped: np.ndarray, echo_times, magnitude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares fit ``phi_n = phi_0 + 2 pi f TE_n`` over echoes (closed form, float32).

    Parameters
    ----------
    unwrapped : ndarray (X, Y, Z, E)
        Unwrapped phase (rad).
    echo_times : E floats
        Echo times (s).
    magnitude : ndarray (X, Y, Z, E), optional
        Weights ``w_n = |m_n|^2`` (the phase noise variance is ``sigma^2 / m^2``); uniform if omitted.

    Returns
    -------
    field_hz : ndarray (X, Y, Z)
        ``f = slope / 2 pi`` in Hz, ``slope = sum w (t - t_w)(phi - phi_w) / sum w (t - t_w)^2``
        with ``t_w``, ``phi_w`` the weighted means (TE centred first, so single precision is exact to
        far below the noise).
    phi0 : ndarray (X, Y, Z)
        Intercept (rad; 0 when there is one echo).
    """
    te = np.asarray(echo_times, dtype=np.float64).ravel()
    phi = np.asarray(unwrapped, dtype=np.float32)
    if phi.ndim == 3:
        phi = phi[..., None]
    if te.size == 1:
        return (phi[..., 0] / np.float32(2 * np.pi * te[0])).astype(np.float32), np.zeros(phi.shape[:3], np.float32)
    t0 = te.mean()
    tc = (te - t0).astype(np.float32)
    if magnitude is None:
        w = np.ones(phi.shape, np.float32)
    else:
        w = np.asarray(magnitude, dtype=np.float32)
        w = w * w
        top = float(w.max())
        if top > 0:
            w *= np.float32(1.0 / top)
    w += np.float32(1e-12)
    sw = w.sum(-1)
    swt = w @ tc
    swtt = w @ (tc * tc)
    wp = w * phi
    swp = wp.sum(-1)
    swtp = wp @ tc
    del wp, w
    den = swtt * sw - swt * swt
    slope = (swtp * sw - swt * swp) / np.where(den > 0, den, np.float32(1.0))
    phi0 = (swp - slope * swt) / sw - slope * np.float32(t0)
    return (slope / np.float32(2 * np.pi)).astype(np.float32), phi0.astype(np.float32)

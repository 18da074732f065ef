"""GRE inputs of QSM: their checks, the phase scaling and the field units.

Phase in radians in ``[-pi, pi)`` (:func:`phase_to_radians` detects radians or scanner integers);
field offsets in Hz or ppm of B0 (``ppm = 1e6 f / (gamma_bar B0)``, :func:`hz_to_ppm`); echo times in
seconds; B0 in tesla.
"""

from __future__ import annotations

import numpy as np

from napari_myelin.utils.errors import InputError

#: Gyromagnetic ratio of 1H over 2 pi (MHz/T = Hz/uT).
GAMMA_BAR_MHZ_PER_T = 42.57747892


def hz_to_ppm(field_hz, field_strength_t: float):
    """Field offset in Hz -> ppm of B0: ``ppm = 1e6 f / (gamma_bar B0)``."""
    return np.asarray(field_hz) / (GAMMA_BAR_MHZ_PER_T * float(field_strength_t))


def ppm_to_hz(field_ppm, field_strength_t: float):
    """ppm of B0 -> Hz (inverse of :func:`hz_to_ppm`)."""
    return np.asarray(field_ppm) * (GAMMA_BAR_MHZ_PER_T * float(field_strength_t))


def phase_to_radians(phase: np.ndarray, name: str = "phase") -> np.ndarray:
    """Detect how the phase is scaled and convert it to radians in ``[-pi, pi)``.

    Accepted: radians (all finite values within ``[-pi, pi]`` or ``[0, 2 pi]``, 1e-3 tolerance);
    integer-valued data within 0..4095 (``phi = 2 pi p / 4096 - pi``, Siemens 12-bit magnitude-style
    export) or -4096..4095 (``phi = pi p / 4096``, dcm2niix of Siemens phase). Anything else raises.
    """
    p = np.asarray(phase)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)  # float32 stays float32
    fin = np.isfinite(p)
    if not fin.any():
        raise InputError(f"{name}: holds no finite values; load the phase image of the GRE series.")
    if not fin.all():
        raise InputError(f"{name}: has NaN or infinite voxels; fix the phase image (e.g. set them to 0).")
    del fin
    finite = p
    lo, hi = float(finite.min()), float(finite.max())
    tol = 1e-3
    if lo >= -np.pi - tol and hi <= np.pi + tol:
        return np.clip(p, -np.pi, np.pi).astype(p.dtype, copy=False)
    if lo >= -tol and hi <= 2 * np.pi + tol:
        return np.angle(np.exp(1j * p))
    p = p.astype(np.float64)
    finite = p
    integer = np.allclose(finite, np.round(finite), atol=1e-6)
    if integer and lo >= 0 and hi <= 4095:
        return np.angle(np.exp(1j * (2 * np.pi * p / 4096.0 - np.pi)))
    if integer and lo >= -4096 and hi <= 4095:
        return np.angle(np.exp(1j * (np.pi * p / 4096.0)))
    raise InputError(
        f"{name}: values {lo:.4g}..{hi:.4g} are neither radians (-pi..pi) nor scanner integers (0..4095 or "
        "-4096..4095); give the raw phase image."
    )


def check_inputs(magnitude, phase, echo_times, field_strength):
    """Check a GRE series for QSM and return its echo times (s) and field strength (T).

    Raises
    ------
    InputError
        Magnitude and phase of different shapes, not 3D or 4D (echoes last), one echo time per echo
        missing or not increasing seconds, B0 missing or not a scanner field, non-finite magnitude.
    """
    mag = np.asarray(magnitude)
    ph = np.asarray(phase)
    if mag.shape != ph.shape:
        raise InputError(
            f"magnitude/phase: shapes {mag.shape} and {ph.shape} differ; give the magnitude and phase of the "
            "same GRE series."
        )
    if ph.ndim not in (3, 4):
        raise InputError(f"phase: has {ph.ndim} dimensions; QSM needs a 3D or 4D (echoes last) GRE phase.")
    n_echo = 1 if ph.ndim == 3 else ph.shape[3]
    if echo_times is None:
        raise InputError("echo_times: missing; give the echo times in seconds (--te or the EchoTime sidecar).")
    te = np.atleast_1d(np.asarray(echo_times, dtype=float))
    if te.size != n_echo:
        raise InputError(
            f"echo_times: {te.size} echo times were given for {n_echo} echoes; give one TE (s) per echo."
        )
    if not np.all(np.isfinite(te)) or np.any(te <= 0) or np.any(te > 1.0):
        raise InputError(f"echo_times: {te.tolist()} are not echo times in seconds (0 < TE < 1 s); check --te.")
    if n_echo > 1 and np.any(np.diff(te) <= 0):
        raise InputError(f"echo_times: {te.tolist()} do not increase; list the echoes in acquisition order.")
    if field_strength is None:
        raise InputError(
            "field_strength: missing; give the main field in tesla (--b0, or MagneticFieldStrength in the sidecar)."
        )
    b0 = float(field_strength)
    if not np.isfinite(b0) or b0 <= 0 or b0 > 20:
        raise InputError(f"field_strength: {b0} T is not a scanner field; give B0 in tesla (e.g. 3).")
    if mag.dtype.kind in "fc" and not np.isfinite(mag).all():
        raise InputError("magnitude: has NaN or infinite voxels; fix the magnitude image.")
    return te, b0

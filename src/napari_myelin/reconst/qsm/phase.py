"""GRE inputs of QSM: their checks, the phase scaling and the field units.

Phase in radians in ``[-pi, pi)`` (:func:`phase_to_radians` detects radians or scanner integers and
refuses any other range); its sign checked from the data (:func:`phase_sign_check`: veins and iron-rich
nuclei must come out paramagnetic); field offsets in Hz or ppm of B0 (``ppm = 1e6 f / (gamma_bar B0)``,
:func:`hz_to_ppm`); echo times in seconds; B0 in tesla.
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_myelin.utils.errors import InputError

#: Gyromagnetic ratio of 1H over 2 pi (MHz/T = Hz/uT).
GAMMA_BAR_MHZ_PER_T = 42.57747892

#: Smallest span of a phase image, as a fraction of its scale's full range, taken as a wrapped GRE phase.
MIN_PHASE_SPAN = 0.25

#: R2* above this multiple of the brain's median R2* marks venous and iron-rich voxels (sign check).
SIGN_R2STAR_FACTOR = 1.5

#: Fewest such voxels the sign check decides on.
MIN_SIGN_VOXELS = 20


class PhaseSignWarning(UserWarning):
    """The brain's high-R2* voxels came out diamagnetic: the phase sign is probably inverted."""


def hz_to_ppm(field_hz, field_strength_t: float):
    """Field offset in Hz -> ppm of B0: ``ppm = 1e6 f / (gamma_bar B0)``."""
    return np.asarray(field_hz) / (GAMMA_BAR_MHZ_PER_T * float(field_strength_t))


def ppm_to_hz(field_ppm, field_strength_t: float):
    """ppm of B0 -> Hz (inverse of :func:`hz_to_ppm`)."""
    return np.asarray(field_ppm) * (GAMMA_BAR_MHZ_PER_T * float(field_strength_t))


def phase_to_radians(phase: np.ndarray, name: str = "phase") -> np.ndarray:
    """Detect how the phase is scaled and convert it to radians in ``[-pi, pi)``.

    Accepted: radians (all values within ``[-pi, pi]`` or ``[0, 2 pi]``, 1e-3 tolerance); integer-valued
    data within 0..4095 (``phi = 2 pi p / 4096 - pi``, Siemens 12-bit magnitude-style export) or
    -4096..4095 (``phi = pi p / 4096``, dcm2niix of Siemens phase). A wrapped GRE phase fills most of its
    range, so values spanning less than :data:`MIN_PHASE_SPAN` of it are refused too (e.g. a phase stored
    as +-pi/855 behind a header whose ``scl_slope`` is NaN, which would otherwise read as a field near 0).

    Raises
    ------
    InputError
        NaN or infinite voxels, no finite value, or values that are none of the above.
    """
    p = np.asarray(phase)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)  # float32 stays float32
    fin = np.isfinite(p)
    if not fin.any():
        raise InputError(f"{name}: holds no finite values; load the phase image of the GRE series.")
    if not fin.all():
        raise InputError(f"{name}: has NaN or infinite voxels; fix the phase image (e.g. set them to 0).")
    del fin
    lo, hi = float(p.min()), float(p.max())
    tol = 1e-3
    wide = hi - lo >= MIN_PHASE_SPAN * 2 * np.pi
    if wide and lo >= -np.pi - tol and hi <= np.pi + tol:
        return np.clip(p, -np.pi, np.pi).astype(p.dtype, copy=False)
    if wide and lo >= -tol and hi <= 2 * np.pi + tol:
        return np.angle(np.exp(1j * p))
    if np.allclose(p, np.round(p), atol=1e-6):
        p = p.astype(np.float64)
        if lo >= 0 and hi <= 4095 and hi - lo >= MIN_PHASE_SPAN * 4096:
            return np.angle(np.exp(1j * (2 * np.pi * p / 4096.0 - np.pi)))
        if lo >= -4096 and hi <= 4095 and hi - lo >= MIN_PHASE_SPAN * 8192:
            return np.angle(np.exp(1j * (np.pi * p / 4096.0)))
    raise InputError(
        f"{name}: values {lo:.4g}..{hi:.4g} are neither radians (-pi..pi) nor scanner integers (0..4095 or "
        f"-4096..4095) spanning at least {MIN_PHASE_SPAN:.0%} of that range as a wrapped GRE phase does; give "
        "the raw phase image, or rescale it to radians if its header's scaling is wrong."
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


def phase_sign_result(check: dict) -> str:
    """The verdict of a :func:`phase_sign_check` record: ``consistent`` when at least 60 % of its high-R2*
    voxels came out paramagnetic, ``inverted`` when at most 40 % did, ``inconclusive`` in between and
    ``not checked`` with fewer than :data:`MIN_SIGN_VOXELS` of them."""
    if check.get("Voxels", 0) < MIN_SIGN_VOXELS:
        return "not checked"
    fraction = check["ParamagneticVoxels"] / check["Voxels"]
    return "consistent" if fraction >= 0.6 else "inverted" if fraction <= 0.4 else "inconclusive"


def phase_sign_check(chi, r2star, mask, *, phase_sign: int = 1, box: int = 5) -> dict:
    """Check the phase sign from the data: veins and iron-rich nuclei must come out paramagnetic.

    Voxels of the mask eroded by two voxels (away from the air/tissue edge) whose R2* exceeds
    :data:`SIGN_R2STAR_FACTOR` times its median are venous blood (deoxyhaemoglobin) or iron-rich deep
    grey matter; both are paramagnetic, so their susceptibility lies above the mean of their
    ``box``-voxel neighbourhood in the eroded mask (white matter raises R2* by far less than 1.5x and is
    diamagnetic). An inverted phase negates chi, putting most of them below it. The verdict
    (:func:`phase_sign_result`) needs R2* (two or more echoes) and :data:`MIN_SIGN_VOXELS` such voxels;
    when it is ``inverted`` a :class:`PhaseSignWarning` names ``--phase-sign``.

    Parameters
    ----------
    chi : ndarray (X, Y, Z)
        Susceptibility (ppm, any reference).
    r2star : ndarray (X, Y, Z) or None
        R2* (1/s) on the same grid.
    mask : ndarray of bool
        Voxels with a susceptibility value.
    phase_sign : {1, -1}
        The sign that was applied to the phase (named in the warning's advice).

    Returns
    -------
    dict
        What was measured, no verdict (a sidecar's ``Parameters`` hold it, and a normative model compares
        the entries its controls share; counts are never compared): ``Voxels`` (high-R2* voxels used),
        ``ParamagneticVoxels`` (those above their neighbourhood) and ``R2starThreshold_per_s`` (None
        without R2*).

    References
    ----------
    Haacke EM et al. Imaging iron stores in the brain using magnetic resonance imaging. Magn Reson
    Imaging 23:1-25 (2005). Deistung A et al. Toward in vivo histology: a comparison of quantitative
    susceptibility mapping (QSM) with magnitude-, phase-, and R2*-imaging at ultra-high magnetic field
    strength. NeuroImage 65:299-314 (2013).
    """
    from scipy import ndimage

    out = {"Voxels": 0, "ParamagneticVoxels": 0, "R2starThreshold_per_s": None}
    core = ndimage.binary_erosion(np.asarray(mask, bool), iterations=2)
    if r2star is None or core.sum() < MIN_SIGN_VOXELS:
        return out
    threshold = SIGN_R2STAR_FACTOR * float(np.median(r2star[core]))
    high = core & (r2star > threshold)
    out.update(Voxels=int(high.sum()), R2starThreshold_per_s=round(threshold, 3))
    if out["Voxels"] < MIN_SIGN_VOXELS:
        return out
    chi = np.where(core, chi, 0).astype(np.float64)
    weight = ndimage.uniform_filter(core.astype(np.float64), box)
    contrast = chi[high] - (ndimage.uniform_filter(chi, box)[high] / weight[high])
    out["ParamagneticVoxels"] = int((contrast > 0).sum())
    if phase_sign_result(out) == "inverted":
        flip = -int(np.sign(phase_sign) or 1)
        warnings.warn(PhaseSignWarning(
            f"phase: {out['Voxels'] - out['ParamagneticVoxels']} of the {out['Voxels']} high-R2* voxels (veins, "
            f"iron-rich nuclei) came out diamagnetic against their neighbourhood, so the phase sign is probably "
            f"inverted; rerun with --phase-sign {flip} (phase_sign={flip} in Python) and check that the veins are "
            "bright in chi."), stacklevel=3)
    return out

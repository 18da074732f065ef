"""Magnetization transfer saturation (MTsat) and ratio (MTR) from three spoiled gradient echoes (Helms 2008).

Inputs: three SPGR (FLASH) volumes on one grid, an MT-weighted one (``MTw``: an off-resonance MT pulse
before each excitation) and two without MT pulse, PD-weighted (``PDw``: small flip angle) and T1-weighted
(``T1w``: large flip angle), with their flip angles ``a`` (deg) and repetition times ``TR`` (s); optionally
a transmit map ``b`` (ratio of actual to nominal flip angle). Outputs: ``mtsat`` (p.u., percent of the
longitudinal magnetisation saturated by one MT pulse), ``mtr`` (%), ``t1`` (s) and the apparent amplitude
``a`` (signal units: M0 times the receive profile and the T2* decay to the echo).

Signal model (Helms et al. 2008): a single pool, whose longitudinal magnetisation loses the fraction
``delta`` to the MT pulse just before each excitation, in the spoiled steady state::

    S = A sin(a) (1 - delta) (1 - E1) / (1 - (1 - delta) cos(a) E1),     E1 = exp(-R1 TR),  R1 = 1/T1

(``delta = 0`` for PDw and T1w). **Small-angle equations** (default; Helms et al. 2008 with the erratum
of 2010, as qMRLab ``mt_sat`` and the hMRI toolbox): with ``sin a ~ a``, ``cos a ~ 1 - a^2/2`` and
``E1 ~ 1 - R1 TR`` to first order, ``S = A a R1 TR / (R1 TR + a^2/2 + delta)``, which inverts in closed form::

    R1    = 1/2 (S_T1 a_T1/TR_T1 - S_PD a_PD/TR_PD) / (S_PD/a_PD - S_T1/a_T1)
    A     = S_PD S_T1 (TR_PD a_T1/a_PD - TR_T1 a_PD/a_T1) / (S_T1 TR_PD a_T1 - S_PD TR_T1 a_PD)
    delta = (A a_MT / S_MT - 1) R1 TR_MT - a_MT^2 / 2

Their relative error grows as ``a^2`` (about 2 % in T1 at 20 deg). **Exact equations**
(``exact=True``): R1 solves ``log(S_PD/S_T1) = log f(a_PD, TR_PD, R1) - log f(a_T1, TR_T1, R1)``,
``f(a, TR, R1) = sin a (1 - E1)/(1 - E1 cos a)`` (Newton steps on ``log R1`` from the small-angle R1;
with equal TRs this is the two-point DESPOT1 line), ``A = S_PD / f(a_PD, TR_PD, R1)`` and, with
``s = S_MT / (A sin a_MT)``, ``1 - delta = s / (1 - E1 + s cos(a_MT) E1)``.

MT ratio: ``MTR = 100 (S_PD - S_MT) / S_PD`` (%).

B1 (Helms et al. 2008; Weiskopf et al. 2013): with a B1 map, R1 and A use the actual angles ``b a_PD`` and
``b a_T1`` (in the small-angle equations this is ``R1 b^2`` and ``A / b``). The MT saturation itself depends on
B1 through the MT pulse; by default (``b1_correction = f = 0.4``) it is corrected empirically,
``MTsat_corr = MTsat (1 - f) / (1 - f b)`` (Weiskopf et al. 2013; qMRLab, hMRI), with the MTw angle left
nominal as in that calibration. With ``b1_correction = 0`` no empirical factor is applied and the MTw
excitation takes its actual angle ``b a_MT`` (qmrust's model-based path), so ``delta`` is the saturation of
the MT pulse as played out at that B1.

References
----------
Helms G, Dathe H, Kallenberg K, Dechent P. High-resolution maps of magnetization transfer with inherent
correction for RF inhomogeneity and T1 relaxation obtained from 3D FLASH MRI. Magn Reson Med
60:1396-1407 (2008); erratum Magn Reson Med 64:1856 (2010).
Weiskopf N, Suckling J, Williams G, et al. Quantitative multi-parameter mapping of R1, PD*, MT, and R2*
at 3T: a multi-center validation. Front Neurosci 7:95 (2013).
Karakuzu A, et al. qMRLab: Quantitative MRI analysis, under one umbrella. J Open Source Softw 5:2343
(2020). (``mt_sat``, the reference implementation of the small-angle equations.)
"""

from __future__ import annotations

import numpy as np

from napari_myelin.io.bids import mts_roles
from napari_myelin.io.maps import Maps
from napari_myelin.io.volume import Volume, load_volume
from napari_myelin.reconst.transmit import b1_ratio
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step

#: Names of the three volumes, in the order of ``flip_angles`` and ``repetition_times``.
ROLES = ("MT-weighted", "PD-weighted", "T1-weighted")

#: Empirical B1 correction factor of MTsat (Weiskopf et al. 2013; qMRLab and hMRI default).
B1_CORRECTION = 0.4

_NEWTON_STEPS = 30
_NEWTON_TOL = 1e-9  # residual of the log-signal ratio below which a voxel counts as solved


def mtsat_signal(a, t1, delta, flip_angle_deg, tr, b1=None) -> np.ndarray:
    """SPGR signal with an MT saturation per repetition (Helms et al. 2008, exact steady state).

    ``S = A sin(ba) (1 - delta) (1 - E1) / (1 - (1 - delta) cos(ba) E1)``, ``E1 = exp(-TR/T1)``.

    Parameters
    ----------
    a : array_like
        Apparent amplitude (signal units).
    t1 : array_like
        T1 (s).
    delta : array_like
        Fraction (0-1) of the longitudinal magnetisation saturated by the MT pulse (0: no MT pulse).
    flip_angle_deg : float
        Nominal flip angle (deg).
    tr : float
        Repetition time (s).
    b1 : array_like or None
        Transmit ratio (actual / nominal angle); ``None`` means 1.

    Returns
    -------
    ndarray
        The signal, broadcast over ``a``, ``t1``, ``delta`` and ``b1``.
    """
    alpha = np.deg2rad(float(flip_angle_deg)) * (1.0 if b1 is None else np.asarray(b1, dtype=float))
    e1 = np.exp(-float(tr) / np.asarray(t1, dtype=float))
    q = 1.0 - np.asarray(delta, dtype=float)
    return np.asarray(a, dtype=float) * np.sin(alpha) * q * (1.0 - e1) / (1.0 - q * np.cos(alpha) * e1)


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def _protocol(values, what: str, unit: str, example: str, low: float, high: float) -> np.ndarray:
    """Three positive numbers (MTw, PDw, T1w) within ``(low, high]``, or one sentence saying what to give."""
    if values is None:
        raise InputError(f"MTsat: no {what} were given; pass three values (MTw, PDw, T1w; {unit}), e.g. {example}, "
                         "or add them to each volume's JSON sidecar.")
    v = np.atleast_1d(np.asarray(values, dtype=float)).ravel()
    if v.size != 3:
        raise InputError(f"MTsat: {v.size} {what} were given; give three (MTw, PDw, T1w; {unit}), e.g. {example}.")
    if not np.all(np.isfinite(v)) or np.any(v <= low) or np.any(v > high):
        hint = "give them in seconds, not ms" if unit == "s" else f"give them in {unit}"
        raise InputError(f"MTsat: {what} {v.tolist()} are not all within ({low:g}, {high:g}] {unit}; {hint} "
                         f"(e.g. {example}).")
    return v


def _volumes(mtw, pdw, t1w) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three volumes as float arrays of one shape, with no negative value."""
    given = dict(zip(ROLES, (mtw, pdw, t1w)))
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise InputError(f"MTsat needs three volumes (MT-weighted, PD-weighted and T1-weighted); the "
                         f"{' and '.join(missing)} volume{'s were' if len(missing) > 1 else ' was'} not given.")
    vols = [np.asarray(v, dtype=float) for v in given.values()]
    for name, v in zip(ROLES, vols):
        if v.shape != vols[0].shape:
            raise InputError(f"MTsat: the {name} volume has shape {v.shape} but the MT-weighted one {vols[0].shape}; "
                             "give the three volumes on one grid.")
        if np.any(v[np.isfinite(v)] < 0):
            raise InputError(f"MTsat: the {name} volume has negative values; give magnitude images (not real, "
                             "imaginary or phase images).")
    return vols[0], vols[1], vols[2]


def _mask(mask, vols) -> np.ndarray:
    """Voxels to fit: the given mask, or every voxel whose three signals are finite and positive."""
    usable = np.ones(vols[0].shape, bool)
    for v in vols:
        usable &= np.isfinite(v) & (v > 0)
    if mask is None:
        if not usable.any():
            raise InputError("MTsat: no voxel has a positive signal in all three volumes; give the magnitude images "
                             "of the MT-weighted, PD-weighted and T1-weighted acquisitions.")
        return usable
    m = np.asarray(mask).astype(bool)
    if m.shape != vols[0].shape:
        raise InputError(f"MTsat mask: shape {m.shape} differs from the image grid {vols[0].shape}; give a mask on "
                         "the grid of the three volumes.")
    for name, v in zip(ROLES, vols):
        bad = int((m & ~(np.isfinite(v) & (v > 0))).sum())
        if bad:
            raise InputError(f"MTsat: {bad} voxels of the mask have zero or non-finite signal in the {name} volume; "
                             "give a mask inside the imaged head (or none: every voxel with signal is fitted).")
    return m


def _sidecar_values(sidecars, names, keys, what: str, flag: str) -> list[float]:
    """The first of ``keys`` found in each sidecar (a list gives its first value)."""
    values = []
    for side, name in zip(sidecars, names):
        key = next((k for k in keys if k in side), None)
        if key is None:
            raise InputError(f"{name}: its JSON sidecar has no {' or '.join(keys)}; add it ({what}) or give the three "
                             f"values (MTw, PDw, T1w; {flag} on the command line).")
        values.append(float(np.atleast_1d(side[key])[0]))
    return values


def mts_protocol(sidecars, names, *, flip_angles=None, repetition_times=None) -> tuple[list[float], list[float]]:
    """Flip angles (deg) and repetition times (s) of MTw, PDw and T1w: the given values, else the sidecars'.

    ``FlipAngle`` and ``RepetitionTimeExcitation`` (BIDS MTS) or ``RepetitionTime`` are read from the three
    sidecars (dicts, in role order); ``names`` (files or layers) name them in the error message.

    Raises
    ------
    InputError
        A value neither given nor in a sidecar.
    """
    fa = flip_angles if flip_angles is not None else _sidecar_values(sidecars, names, ("FlipAngle",), "deg",
                                                                     "--flip-angles")
    tr = repetition_times if repetition_times is not None else _sidecar_values(
        sidecars, names, ("RepetitionTimeExcitation", "RepetitionTime"), "s", "--tr")
    return [float(x) for x in np.atleast_1d(fa)], [float(x) for x in np.atleast_1d(tr)]


def load_mts(paths, *, flip_angles=None, repetition_times=None):
    """Load the MT-, PD- and T1-weighted volumes from three files, with their protocol.

    A BIDS trio (``*_flip-1_mt-on_MTS``, ``*_flip-1_mt-off_MTS``, ``*_flip-2_mt-off_MTS``) is put in role order by
    its entities (:func:`napari_myelin.io.bids.mts_roles`); other files are taken as MTw, PDw, T1w in the order
    given. Flip angles come from each sidecar's ``FlipAngle`` and repetition times from
    ``RepetitionTimeExcitation`` (BIDS MTS) or ``RepetitionTime``, unless given.

    Returns
    -------
    (list of Volume, list of float, list of float)
        The three 3D volumes (MTw, PDw, T1w), their flip angles (deg) and repetition times (s).

    Raises
    ------
    InputError
        Not three files, a 4D file, volumes on different grids, or a protocol value neither given nor in a sidecar.
    """
    paths = list(paths)
    if len(paths) != 3:
        raise InputError(f"MTsat: {len(paths)} file(s) were given; give three, the MT-weighted, PD-weighted and "
                         "T1-weighted volumes (or a BIDS trio *_flip-1_mt-on_MTS, *_flip-1_mt-off_MTS, *_flip-2_mt-off_MTS).")
    vols = []
    for path in mts_roles(paths):
        vol = load_volume(path)
        if vol.data.ndim == 4 and vol.data.shape[3] != 1:
            raise InputError(f"{path}: holds {vol.data.shape[3]} volumes; give one 3D volume per weighting (MTw, PDw, T1w).")
        vols.append(Volume(vol.data.reshape(vol.data.shape[:3]), vol.affine, vol.header, vol.metadata, vol.path))
    for v in vols[1:]:
        if v.shape != vols[0].shape or not np.allclose(v.affine, vols[0].affine, atol=1e-4):
            raise InputError(f"{v.path}: its grid differs from {vols[0].path}; the three volumes must share one grid "
                             "(same shape and affine).")
    fa, tr = mts_protocol([v.metadata for v in vols], [v.path for v in vols], flip_angles=flip_angles,
                          repetition_times=repetition_times)
    return vols, fa, tr


# --------------------------------------------------------------------------------------------------
# equations, batched over voxels
# --------------------------------------------------------------------------------------------------
def _small_angle_r1_a(s_pd, s_t1, a_pd, a_t1, tr_pd, tr_t1):
    """R1 (1/s) and A of the PDw/T1w pair by Helms' small-angle equations (angles in rad, per voxel)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = 0.5 * (s_t1 * a_t1 / tr_t1 - s_pd * a_pd / tr_pd) / (s_pd / a_pd - s_t1 / a_t1)
        amp = (s_pd * s_t1 * (tr_pd * a_t1 / a_pd - tr_t1 * a_pd / a_t1)
               / (s_t1 * tr_pd * a_t1 - s_pd * tr_t1 * a_pd))
    return r1, amp


def _log_f(alpha, tr, r1):
    """``log f`` and its derivative in ``log R1``, ``f = sin a (1 - E1)/(1 - E1 cos a)``, ``E1 = exp(-R1 TR)``."""
    e1 = np.exp(-r1 * tr)
    c = np.cos(alpha)
    log_f = np.log(np.sin(alpha)) + np.log1p(-e1) - np.log1p(-e1 * c)
    d_log_r1 = r1 * tr * e1 * (1.0 - c) / ((1.0 - e1) * (1.0 - e1 * c))
    return log_f, d_log_r1


def _exact_r1_a(s_pd, s_t1, a_pd, a_t1, tr_pd, tr_t1, r1_start):
    """R1 and A of the exact SPGR equations: Newton steps on ``x = log R1`` from ``r1_start``.

    Voxels without a solution (a PDw/T1w ratio outside the range the equations reach, which noise can
    cause) come back with ``R1 = nan``.
    """
    target = np.log(s_pd) - np.log(s_t1)
    ok = np.isfinite(r1_start) & (r1_start > 0)
    x = np.log(np.where(ok, r1_start, 1.0))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(_NEWTON_STEPS):
            r1 = np.exp(x)
            f_pd, d_pd = _log_f(a_pd, tr_pd, r1)
            f_t1, d_t1 = _log_f(a_t1, tr_t1, r1)
            dx = (f_pd - f_t1 - target) / (d_pd - d_t1)
            x = np.clip(x - dx, -20.0, 20.0)
            if not np.any(np.abs(dx[ok]) > 1e-13):  # every solvable voxel converged (quadratically)
                break
        r1 = np.exp(x)
        f_pd, _ = _log_f(a_pd, tr_pd, r1)
        f_t1, _ = _log_f(a_t1, tr_t1, r1)
        ok &= np.abs(f_pd - f_t1 - target) < _NEWTON_TOL
        amp = s_pd / np.exp(f_pd)
    return np.where(ok, r1, np.nan), np.where(ok, amp, np.nan)


def _delta(s_mt, amp, r1, a_mt, tr_mt, exact):
    """MT saturation ``delta`` (fraction) of the MTw signal, given R1 (1/s), A and the MTw angle (rad)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if not exact:
            return (amp * a_mt / s_mt - 1.0) * r1 * tr_mt - 0.5 * a_mt * a_mt
        e1 = np.exp(-r1 * tr_mt)
        s = s_mt / (amp * np.sin(a_mt))
        return 1.0 - s / (1.0 - e1 + s * np.cos(a_mt) * e1)


def _fit_voxels(s_mt, s_pd, s_t1, b, alpha, tr, exact, b1_correction):
    """MTsat (p.u.), MTR (%), R1 (1/s) and A of a batch of voxels (1D arrays); ``b`` is None or the B1 ratio."""
    scale = 1.0 if b is None else b
    a_mt, a_pd, a_t1 = alpha[0], alpha[1] * scale, alpha[2] * scale
    r1, amp = _small_angle_r1_a(s_pd, s_t1, a_pd, a_t1, tr[1], tr[2])
    if exact:
        r1, amp = _exact_r1_a(s_pd, s_t1, a_pd, a_t1, tr[1], tr[2], r1)
    if b is not None and b1_correction == 0:
        a_mt = a_mt * b  # model-based path: the MTw excitation at its actual angle, no empirical factor
    mtsat = 100.0 * _delta(s_mt, amp, r1, a_mt, tr[0], exact)
    if b is not None and b1_correction > 0:
        mtsat = mtsat * (1.0 - b1_correction) / (1.0 - b1_correction * b)
    mtr = 100.0 * (s_pd - s_mt) / s_pd
    return mtsat, mtr, r1, amp


def _fit_masked(vols, m, b, alpha, tr, exact, b1_correction, chunk_size, progress, cancel):
    """The four maps (0 outside ``m``) and the number of invalid voxels, in chunks of ``chunk_size`` voxels."""
    idx = np.flatnonzero(m)
    flat = [v.ravel() for v in vols]
    out = {k: np.zeros(m.size) for k in ("mtsat", "mtr", "t1", "a")}
    n_invalid = 0
    n_chunks = max(1, int(np.ceil(idx.size / chunk_size)))
    step(progress, cancel, 0.0, "MTsat")
    for c in range(n_chunks):
        sel = idx[c * chunk_size:(c + 1) * chunk_size]
        mtsat, mtr, r1, amp = _fit_voxels(*(f[sel] for f in flat), None if b is None else b.ravel()[sel], alpha, tr,
                                          exact, b1_correction)
        valid = np.isfinite(r1) & (r1 > 0) & np.isfinite(amp) & np.isfinite(mtsat)
        out["t1"][sel] = np.where(valid, 1.0 / np.where(valid, r1, 1.0), 0.0)
        out["a"][sel] = np.where(valid, amp, 0.0)
        out["mtsat"][sel] = np.where(valid, mtsat, 0.0)
        out["mtr"][sel] = mtr
        n_invalid += int((~valid).sum())
        step(progress, cancel, (c + 1) / n_chunks, f"MTsat: {min((c + 1) * chunk_size, idx.size)}/{idx.size} voxels")
    return {k: v.reshape(m.shape) for k, v in out.items()}, n_invalid


def _maps(out, fa, tr, exact, b1_corrected, b1_correction, n_fit, n_invalid) -> Maps:
    """The :class:`Maps` of :func:`fit_mtsat`, with units, descriptions and parameters."""
    eqs = "exact SPGR equations" if exact else "small-angle equations (Helms 2008, erratum 2010)"
    b1_note = ""
    if b1_corrected:
        b1_note = (f", B1 corrected (R1 and A with actual angles; MTsat x (1 - {b1_correction:g})/(1 - {b1_correction:g} B1))"
                   if b1_correction > 0 else ", B1 corrected (all excitation angles actual, no empirical factor)")
    return Maps(
        out,
        units={"mtsat": "p.u.", "mtr": "%", "t1": "s", "a": "a.u."},
        descriptions={
            "mtsat": f"magnetization transfer saturation, percent of the longitudinal magnetisation per MT pulse ({eqs}{b1_note})",
            "mtr": "magnetization transfer ratio 100 (PDw - MTw)/PDw",
            "t1": f"T1 from the PD- and T1-weighted pair ({eqs}{', B1 corrected' if b1_corrected else ''})",
            "a": "apparent signal amplitude (M0 with the receive profile and T2* weighting)",
        },
        method=f"MTsat (Helms 2008), {eqs}",
        parameters={
            "flip_angles_deg": {"MTw": fa[0], "PDw": fa[1], "T1w": fa[2]},
            "repetition_times_s": {"MTw": tr[0], "PDw": tr[1], "T1w": tr[2]},
            "equations": "exact" if exact else "small-angle",
            "b1_corrected": b1_corrected,
            "b1_correction_factor": b1_correction if b1_corrected else None,
            "n_voxels": n_fit,
            "n_invalid": n_invalid,
        },
    )


def fit_mtsat(mtw, pdw, t1w, *, flip_angles, repetition_times, b1=None, b1_correction: float = B1_CORRECTION,
              mask=None, exact: bool = False, chunk_size: int = 1_000_000, progress=None, cancel=None) -> Maps:
    """MTsat, MTR, T1 and the apparent amplitude from MT-, PD- and T1-weighted SPGR volumes (Helms 2008).

    The equations are those of the module docstring: Helms' small-angle closed forms by default (as qMRLab
    ``mt_sat`` and hMRI), the exact SPGR steady state with ``exact=True``; every voxel of the mask in one
    batch of at most ``chunk_size`` voxels at a time.

    Parameters
    ----------
    mtw, pdw, t1w : array_like, shape (...)
        MT-weighted, PD-weighted and T1-weighted magnitudes on one grid (any spatial shape).
    flip_angles : sequence of 3 float
        Nominal flip angles of MTw, PDw and T1w (deg, in (0, 90]).
    repetition_times : sequence of 3 float
        Repetition times of MTw, PDw and T1w (s, in (0, 1]).
    b1 : array_like or None, shape (...)
        Transmit ratio (actual / nominal angle) on the same grid; percent (median > 10) is detected.
    b1_correction : float
        Empirical factor ``f`` of ``MTsat (1 - f)/(1 - f B1)`` in [0, 1) (Weiskopf et al. 2013; default 0.4),
        used only with ``b1``; 0: no empirical factor, the MTw excitation takes its actual angle instead.
    mask : array_like of bool or None
        Voxels to fit (every one must have a positive signal in all three volumes); default: every voxel with
        finite, positive signals in all three.
    exact : bool
        Exact SPGR equations instead of the small-angle ones.
    chunk_size : int
        Voxels per batch (bounds memory).
    progress, cancel
        See :mod:`napari_myelin.utils.progress`.

    Returns
    -------
    Maps
        ``mtsat`` (p.u.), ``mtr`` (%), ``t1`` (s) and ``a`` (a.u.); 0 outside the mask. Voxels whose PDw/T1w pair
        gives no positive, finite R1 (noise or swapped volumes) are 0 in every map but ``mtr``; their number is
        ``parameters["n_invalid"]``.

    Raises
    ------
    InputError
        A volume missing, volumes on different grids, negative or (inside the mask) zero signal, flip angles or
        repetition times missing or out of range, identical PDw and T1w protocols, or a B1 map on another grid.
    """
    s_mt, s_pd, s_t1 = _volumes(mtw, pdw, t1w)
    fa = _protocol(flip_angles, "flip angles", "deg", "6 6 20", 0.0, 90.0)
    tr = _protocol(repetition_times, "repetition times", "s", "0.028 0.028 0.018", 0.0, 1.0)
    if fa[1] == fa[2] and tr[1] == tr[2]:
        raise InputError(f"MTsat: the PD- and T1-weighted volumes share flip angle ({fa[1]:g} deg) and TR ({tr[1]:g} s); "
                         "T1 needs two different flip angles (e.g. 6 and 20 deg).")
    if not 0.0 <= float(b1_correction) < 1.0:
        raise InputError(f"MTsat: B1 correction factor {b1_correction} is outside [0, 1); use 0.4 (Weiskopf et al. 2013) "
                         "or 0 for none.")
    b = b1_ratio(b1, s_mt.shape, grid="MT-weighted")
    m = _mask(mask, (s_mt, s_pd, s_t1))
    arrays, n_invalid = _fit_masked((s_mt, s_pd, s_t1), m, b, np.deg2rad(fa), tr, exact, float(b1_correction),
                                    chunk_size, progress, cancel)
    return _maps(arrays, fa.tolist(), tr.tolist(), exact, b is not None, float(b1_correction), int(m.sum()), n_invalid)

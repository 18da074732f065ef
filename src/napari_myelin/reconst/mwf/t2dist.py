"""The T2-distribution fit (DECAES ``T2mapSEcorr``): input checks, voxel selection, the fit chunk by chunk.

Each voxel's decay ``y`` is divided by its maximum (``decay_scale``) to ``b``; the chunk's refocusing
angles and EPG bases come from :class:`napari_myelin.reconst.mwf.basis._ChunkBases` (fixed, from a B1 map or
optimised), the regularised NNLS from :func:`napari_myelin.reconst.mwf.regularization._regularised_nnls`,
and the distributions and fit statistics are rescaled by ``decay_scale``. Chunks of voxels are fitted in
parallel Python threads with single-threaded BLAS. Voxels with NaN/Inf echoes or no positive signal are
skipped (NaN outputs) and counted in ``parameters["n_skipped"]``.

References
----------
Whittall K.P., MacKay A.L., "Quantitative interpretation of NMR relaxation data", J Magn Reson 84 (1989).
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.mwf.basis import _ChunkBases
from napari_myelin.reconst.mwf.regularization import _EPS, REGULARIZATIONS, _regularised_nnls
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step

_UNITS = {
    "distribution": "a.u.", "alpha": "deg", "mu": "1", "chi2_factor": "1", "resnorm": "a.u.", "snr": "1",
    "fnr": "1", "gdn": "a.u.", "gmt2": "s", "gva": "1", "fitted": "bool", "t2_times": "s", "echo_times": "s",
}
_DESCRIPTIONS = {
    "distribution": "T2 distribution amplitudes per T2 bin (DECAES T2mapSEcorr)",
    "alpha": "refocusing flip angle (optimised, fixed or from B1)",
    "mu": "Tikhonov regularisation parameter of the NNLS fit",
    "chi2_factor": "residual sum of squares relative to the unregularised NNLS fit",
    "resnorm": "l2 norm of the fit residuals",
    "snr": "signal-to-noise ratio: max(signal) / std(residuals)",
    "fnr": "fit-to-noise ratio: sum(distribution) / sqrt(sum(residuals^2) / (nTE - 1))",
    "gdn": "general density: sum of the T2 distribution",
    "gmt2": "geometric-mean T2 of the whole distribution (DECAES ggm)",
    "gva": "general variance of log T2: exp(var(log T2)) - 1",
    "fitted": "voxels fitted (inside the mask, finite, positive signal)",
    "t2_times": "T2 bin centres", "echo_times": "echo times",
}
_VOXEL_MAPS = ("alpha", "mu", "chi2_factor", "resnorm", "snr", "fnr", "gdn", "gmt2", "gva")


def _check_inputs(signal, echo_times, n_t2, t2_range, reg, chi2_factor, noise_level):
    """Validated echo times (n_TE,) and the echo spacing (s); ``InputError`` on any invalid setting."""
    if signal.ndim < 1:
        raise InputError("signal: expected an array of decays with echoes on the last axis; pass a 4D multi-echo image.")
    te = np.atleast_1d(np.asarray(echo_times, dtype=np.float64)).ravel()
    if te.size != signal.shape[-1]:
        raise InputError(
            f"echo_times: {te.size} echo times given for {signal.shape[-1]} echoes; give one echo time per echo."
        )
    if te.size < 8:
        raise InputError(f"echo_times: only {te.size} echoes; the T2 distribution fit needs at least 8 echoes.")
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InputError("echo_times: echo times must be positive (seconds); check the EchoTime list.")
    spacing = te[0]
    if not np.allclose(te, spacing * np.arange(1, te.size + 1), rtol=1e-3, atol=1e-6):
        raise InputError(
            "echo_times: echoes must be equally spaced at TE, 2 TE, 3 TE ... (a CPMG train); check the EchoTime list."
        )
    if int(n_t2) < 2:
        raise InputError("n_t2: at least 2 T2 bins are needed; use e.g. 40.")
    lo, hi = (float(v) for v in t2_range)
    if not (0 < lo < hi):
        raise InputError(f"t2_range: ({lo}, {hi}) s is not an increasing positive range; use e.g. (0.01, 2.0).")
    if reg not in REGULARIZATIONS:
        raise InputError(f"reg: '{reg}' is unknown; use one of {', '.join(REGULARIZATIONS)}.")
    if reg == "chi2" and not (chi2_factor is not None and chi2_factor > 1.0):
        raise InputError(f"chi2_factor: {chi2_factor} must be greater than 1 for reg='chi2'; use e.g. 1.02.")
    if reg == "mdp" and not (noise_level is not None and noise_level > 0):
        raise InputError("noise_level: reg='mdp' needs the noise standard deviation (signal units, > 0).")
    return te, float(spacing)


def _select_voxels(flat, mask, spatial):
    """Voxels to fit (n_voxels,) bool: inside ``mask``, finite, positive signal; and how many of the mask
    were skipped."""
    sel = np.ones(flat.shape[0], dtype=bool)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != spatial:
            raise InputError(f"mask: shape {m.shape} does not match the image grid {spatial}; use a mask on the same grid.")
        sel &= m.reshape(-1)
    finite = np.all(np.isfinite(flat), axis=1)
    maxsig = np.max(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
    good = finite & (maxsig > 0) & (flat[:, 0] > 0)
    n_skipped = int(np.count_nonzero(sel & ~good))
    return sel & good, n_skipped


def _flip_angle_setting(flip_angle, spatial, sel, n_skipped):
    """The refocusing angle's mode: ``(fixed, alpha_map, sel, n_skipped)``.

    ``fixed`` (deg) for a number, ``alpha_map`` (n_voxels,) deg for an array of the spatial shape, both
    ``None`` to optimise; ``sel`` without, and ``n_skipped`` counting, the voxels whose mapped angle is not
    finite and positive.
    """
    if flip_angle is None:
        return None, None, sel, n_skipped
    fa = np.asarray(flip_angle, dtype=np.float64)
    if fa.ndim == 0:
        fixed = float(fa)
        if not (0 < fixed <= 360):
            raise InputError(f"flip_angle: {fixed} deg is not a valid refocusing angle; use e.g. 180.")
        return fixed, None, sel, n_skipped
    if fa.shape != spatial:
        raise InputError(
            f"flip_angle: map shape {fa.shape} does not match the image grid {spatial}; resample it first."
        )
    alpha_map = fa.reshape(-1)
    bad_fa = sel & ~(np.isfinite(alpha_map) & (alpha_map > 0))
    return None, alpha_map, sel & ~bad_fa, n_skipped + int(np.count_nonzero(bad_fa))


def _fit_statistics(A, dist, y, scale, res0, reg, log_t2):
    """Per-voxel maps of a fitted chunk: distributions ``dist`` (B, n_t2) in signal units on the bases ``A``
    (B, n_TE, n_t2) against the decays ``y`` (B, n_TE) with maxima ``scale`` (B,); ``res0`` (B,) is the
    unregularised residual of the normalised decays."""
    B, n_te = y.shape
    fit = np.einsum("bmn,bn->bm", A, dist)
    resid = fit - y
    r2 = np.einsum("bm,bm->b", resid, resid)
    # residual of the normalised decay b = y / scale relative to the unregularised fit's
    chi2f = np.ones(B) if reg == "none" else (r2 / scale**2) / np.maximum(res0, _EPS)
    ssum = dist.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ggm = dist @ log_t2 / ssum
        gva = np.expm1(np.einsum("bn,bn->b", (log_t2[None] - log_ggm[:, None]) ** 2, dist) / ssum)
        fnr = ssum / np.sqrt(r2 / (n_te - 1))
        snr = scale / np.std(resid, axis=1, ddof=1)
    return {"distribution": dist, "chi2_factor": chi2f, "resnorm": np.sqrt(r2), "snr": snr, "fnr": fnr,
            "gdn": ssum, "gmt2": np.exp(log_ggm), "gva": gva}


@dataclass
class _ChunkFit:
    """What the chunks of one fit share: the decays ``flat`` (n_voxels, n_TE), the source of angles and
    bases, log T2 of the bins, the regularisation and the output maps ``out`` (NaN until a chunk is fitted)."""

    flat: np.ndarray
    bases: _ChunkBases
    log_t2: np.ndarray
    reg: str
    chi2_factor: float
    noise_level: float | None
    out: dict = field(init=False)

    def __post_init__(self):
        nvox = self.flat.shape[0]
        self.out = {"distribution": np.full((nvox, self.log_t2.size), np.nan),
                    **{name: np.full(nvox, np.nan) for name in _VOXEL_MAPS}}

    def __call__(self, ids) -> int:
        """Fit the voxels ``ids`` into ``out``; returns their number."""
        y = self.flat[ids]
        scale = y.max(axis=1)
        b = y / scale[:, None]
        alpha, A, support = self.bases(ids, b)
        x, mu, res0 = _regularised_nnls(A, b, scale, support, reg=self.reg, chi2_factor=self.chi2_factor,
                                        noise_level=self.noise_level)
        maps = _fit_statistics(A, x * scale[:, None], y, scale, res0, self.reg, self.log_t2)
        maps.update(alpha=alpha, mu=mu)
        for name, values in maps.items():
            self.out[name][ids] = values
        return ids.size


def _single_threaded_blas():
    """BLAS limited to one thread while fitting: the many small products are faster that way (library
    threads would oversubscribe the cores); chunks run in parallel Python threads instead."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _run_chunks(fit_chunk, starts, n_workers, n_fit, progress, cancel):
    """``fit_chunk(start)`` for every chunk start, in turn or on ``n_workers`` threads, reporting progress;
    returns the voxels fitted (a failure or cancel cancels the chunks not yet started)."""
    done = 0
    if n_workers == 1:
        for start in starts:
            done += fit_chunk(start)
            step(progress, cancel, done / max(n_fit, 1), f"Fitted {done}/{n_fit} voxels")
        return done
    # numpy releases the GIL in its array passes: chunks are fitted in parallel threads
    with ThreadPoolExecutor(n_workers) as pool:
        futures = [pool.submit(fit_chunk, s) for s in starts]
        try:
            for fut in futures:
                done += fut.result()
                step(progress, cancel, done / max(n_fit, 1), f"Fitted {done}/{n_fit} voxels")
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return done


def _fit_voxels(fit_chunk, idx_all, chunk_size, workers, progress, cancel, n_skipped):
    """Fit the voxels ``idx_all`` in chunks of ``chunk_size`` on ``workers`` threads; returns their number."""
    n_fit = idx_all.size
    step(progress, cancel, 0.0, f"Fitting T2 distributions of {n_fit} voxels ({n_skipped} skipped)")
    chunk_size = max(int(chunk_size), 1)
    starts = list(range(0, n_fit, chunk_size))
    n_workers = max(1, min(int(workers) if workers else min(2, os.cpu_count() or 1), len(starts) or 1))
    with _single_threaded_blas():
        _run_chunks(lambda start: fit_chunk(idx_all[start:start + chunk_size]), starts, n_workers, n_fit,
                    progress, cancel)
    return n_fit


def _as_maps(out, sel, spatial, t2_times, te, params):
    """The fit's :class:`~napari_myelin.io.maps.Maps`: voxel maps back on the spatial grid, bins and echoes."""
    arrays = {k: v.reshape(spatial + v.shape[1:]) for k, v in out.items()}
    arrays["fitted"] = sel.reshape(spatial)
    arrays["t2_times"] = t2_times
    arrays["echo_times"] = te
    return Maps(arrays, dict(_UNITS), dict(_DESCRIPTIONS),
                method="DECAES-compatible multi-echo T2 NNLS (T2mapSEcorr)", parameters=params)


def fit_t2_distribution(
    signal,
    echo_times,
    *,
    n_t2: int = 40,
    t2_range=(0.01, 2.0),
    reg: str = "chi2",
    chi2_factor: float = 1.02,
    noise_level: float | None = None,
    flip_angle=None,
    n_ref_angles: int = 64,
    min_ref_angle: float = 50.0,
    t1: float = 1.0,
    refocusing_control_angle: float = 180.0,
    mask=None,
    chunk_size: int = 1024,
    workers: int | None = None,
    progress=None,
    cancel=None,
) -> Maps:
    """Multi-echo T2 distributions by regularised NNLS with stimulated-echo correction (DECAES T2mapSEcorr).

    Parameters
    ----------
    signal : array_like, shape (..., n_TE)
        Magnitude decays, echoes on the last axis (any spatial shape, e.g. ``(X, Y, Z, n_TE)``).
    echo_times : array_like, shape (n_TE,)
        Echo times in seconds, equally spaced ``TE, 2 TE, ...``.
    n_t2 : int
        Number of log-spaced T2 bins (DECAES ``nT2``; 40 is common).
    t2_range : (float, float)
        First and last T2 bin in seconds (DECAES ``T2Range``; (0.01, 2.0) is common).
    reg : {"chi2", "none", "mdp", "gcv", "lcurve"}
        Choice of the Tikhonov parameter ``mu`` (DECAES ``Reg``).
    chi2_factor : float
        Allowed increase of the residual sum of squares over the unregularised fit (``reg="chi2"``).
    noise_level : float, optional
        Noise standard deviation in signal units (``reg="mdp"``; DECAES ``NoiseLevel``).
    flip_angle : float or array_like, optional
        Refocusing angle in degrees: ``None`` optimises it per voxel; a number fixes it for all voxels;
        an array of the spatial shape (e.g. ``180 * B1``) fixes it per voxel (DECAES ``SetFlipAngle`` /
        B1 map).
    n_ref_angles : int
        Angles of the discrete search grid in ``[min_ref_angle, 180]`` (DECAES ``nRefAngles``).
    min_ref_angle : float
        Smallest refocusing angle considered, degrees (DECAES ``MinRefAngle``).
    t1 : float
        Fixed T1 of the EPG model in seconds (DECAES ``T1``).
    refocusing_control_angle : float
        Refocusing-pulse control angle in degrees (DECAES ``RefConAngle``).
    mask : array_like of bool, optional
        Spatial mask; voxels outside are not fitted (NaN).
    chunk_size : int
        Voxels fitted together (bounds memory: about 60 kB per voxel at 48 echoes, 40 bins).
    workers : int, optional
        Chunks fitted in parallel threads (default: ``min(2, CPU count)``).
    progress, cancel
        Progress callback ``progress(fraction, message)`` and cancel flag (``is_set()``).

    Returns
    -------
    Maps
        ``distribution`` (..., n_t2) T2 amplitudes (signal units), ``t2_times`` (n_t2,) s,
        ``echo_times`` (n_TE,) s, ``alpha`` refocusing angle (deg), ``mu`` regularisation parameter,
        ``chi2_factor`` residual increase over the unregularised fit, ``resnorm`` residual l2 norm,
        ``snr`` ``max(signal) / std(residuals)``, ``fnr`` fit-to-noise ratio, ``gdn`` total amplitude,
        ``gmt2`` geometric-mean T2 of the distribution (s; DECAES ``ggm``), ``gva`` its variance
        ``exp(var(log T2)) - 1``, ``fitted`` (bool) voxels that were fitted. ``parameters`` records the
        settings and ``n_skipped`` (voxels with NaN/Inf or no positive signal).
    """
    sig = np.asarray(signal, dtype=np.float64)
    reg = str(reg).lower()
    te, spacing = _check_inputs(sig, echo_times, n_t2, t2_range, reg, chi2_factor, noise_level)
    spatial, flat = sig.shape[:-1], sig.reshape(-1, te.size)
    sel, n_skipped = _select_voxels(flat, mask, spatial)
    fixed_scalar, alpha_map, sel, n_skipped = _flip_angle_setting(flip_angle, spatial, sel, n_skipped)
    t2_times = np.logspace(math.log10(t2_range[0]), math.log10(t2_range[1]), int(n_t2))
    bases = _ChunkBases(te.size, spacing, t2_times, t1, refocusing_control_angle, fixed=fixed_scalar,
                        alpha_map=alpha_map, sel=sel, min_ref_angle=min_ref_angle, n_ref_angles=n_ref_angles)
    fit = _ChunkFit(flat, bases, np.log(t2_times), reg, chi2_factor, noise_level)
    n_fit = _fit_voxels(fit, np.nonzero(sel)[0], chunk_size, workers, progress, cancel, n_skipped)
    params = {"n_t2": int(n_t2), "t2_range": [float(t2_range[0]), float(t2_range[1])], "reg": reg,
              "chi2_factor": float(chi2_factor) if reg == "chi2" else None,
              "noise_level": None if noise_level is None else float(noise_level),
              "flip_angle": "optimised" if flip_angle is None else ("fixed" if fixed_scalar is None else fixed_scalar),
              "n_ref_angles": int(n_ref_angles), "min_ref_angle": float(min_ref_angle), "t1": float(t1),
              "refocusing_control_angle": float(refocusing_control_angle), "echo_spacing": spacing,
              "n_fitted": int(n_fit), "n_skipped": int(n_skipped)}
    return _as_maps(fit.out, sel, spatial, t2_times, te, params)

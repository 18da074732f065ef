"""T1, M0, proton density (PD) and macromolecular tissue volume (MTV) from a variable-flip-angle SPGR
series (DESPOT1), batched over voxels.

Per voxel the Ernst equation (:func:`~napari_myelin.reconst.qpm.signal.spgr_signal`) is fitted by
linear DESPOT1 and refined by Levenberg-Marquardt; M0 normalised to CSF gives PD, and ``MTV = 1 - PD``.

References
----------
Deoni SCL, Rutt BK, Peters TM. Rapid combined T1 and T2 mapping using gradient recalled acquisition
in the steady state. Magn Reson Med 49:515-526 (2003).  (DESPOT1, linearised fit.)
Mezer A, et al. Quantifying the local tissue volume and composition in individual brains with MRI.
Nat Med 19:1667-1672 (2013).  (MTV = 1 - PD with PD normalised to CSF.)
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.qpm.inputs import _check_signals, _mask_of, check_protocol
from napari_myelin.reconst.transmit import b1_ratio
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step


def _despot1_linear(s, sa, ta):
    """Linear DESPOT1: ``S/sin a = E1 S/tan a + M0 (1 - E1)``, least squares per voxel."""
    y = s / sa
    x = s / ta
    mx, my = x.mean(-1), y.mean(-1)
    sxx = ((x - mx[..., None]) ** 2).sum(-1)
    sxy = ((x - mx[..., None]) * (y - my[..., None])).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = sxy / sxx
        m0 = (my - e1 * mx) / (1.0 - e1)
    return m0, e1


def _despot1_lm(s, sa, ca, m0, e1, e1_lo, e1_hi, n_iter):
    """Levenberg-Marquardt on (M0, E1) of the Ernst model, batched over voxels (closed-form 2x2 solves)."""
    lam = np.full(m0.shape, 1e-3)

    def resid(m0_, e1_):
        d = 1.0 - e1_[:, None] * ca
        return s - m0_[:, None] * sa * (1.0 - e1_[:, None]) / d, d

    r, d = resid(m0, e1)
    cost = (r**2).sum(-1)
    for _ in range(n_iter):
        j0 = sa * (1.0 - e1[:, None]) / d
        j1 = m0[:, None] * sa * (ca - 1.0) / d**2
        h00, h01, h11 = (j0 * j0).sum(-1), (j0 * j1).sum(-1), (j1 * j1).sum(-1)
        g0, g1 = (j0 * r).sum(-1), (j1 * r).sum(-1)
        a00, a11 = h00 * (1 + lam), h11 * (1 + lam)
        det = a00 * a11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            d0 = (a11 * g0 - h01 * g1) / det
            d1 = (a00 * g1 - h01 * g0) / det
        ok_step = np.isfinite(d0) & np.isfinite(d1)
        m0_new = np.where(ok_step, np.maximum(m0 + d0, 0.0), m0)
        e1_new = np.where(ok_step, np.clip(e1 + d1, e1_lo, e1_hi), e1)
        r_new, d_new = resid(m0_new, e1_new)
        cost_new = (r_new**2).sum(-1)
        better = cost_new <= cost
        m0 = np.where(better, m0_new, m0)
        e1 = np.where(better, e1_new, e1)
        r = np.where(better[:, None], r_new, r)
        d = np.where(better[:, None], d_new, d)
        cost = np.where(better, cost_new, cost)
        lam = np.where(better, lam / 10.0, lam * 10.0).clip(1e-12, 1e12)
    return m0, e1


def _despot1(s, a, tr, e1_lo, e1_hi, nonlinear, n_iter):
    """M0 and E1 of a batch of voxels ``s`` at effective flip angles ``a`` (rad), E1 within [e1_lo, e1_hi].

    Linear DESPOT1 first; where it fails E1 falls back to ``exp(-TR / 1 s)``, and M0 is refitted to
    the clipped E1; then Levenberg-Marquardt when ``nonlinear``.
    """
    sa, ca, ta = np.sin(a), np.cos(a), np.tan(a)
    m0c, e1c = _despot1_linear(s, sa, ta)
    bad = ~(np.isfinite(e1c) & np.isfinite(m0c))
    e1c = np.where(bad, np.exp(-tr / 1.0), e1c).clip(e1_lo, e1_hi)
    d = 1.0 - e1c[:, None] * ca
    g = sa * (1 - e1c[:, None]) / d
    # M0 consistent with the clipped E1 (least squares), exact when E1 was not clipped
    m0c = np.where(bad | (m0c <= 0) | ~np.isfinite(m0c), (s * g).sum(-1) / (g * g).sum(-1), m0c)
    if nonlinear:
        m0c, e1c = _despot1_lm(s, sa, ca, m0c, e1c, e1_lo, e1_hi, n_iter)
    return m0c, e1c


def _fit_t1_m0(sig, m, fa, tr, b1, t1_range, nonlinear, n_iter, chunk_size, progress, cancel):
    """T1 (s) and M0 maps of the voxels in ``m``, in chunks of ``chunk_size`` voxels; 0 outside ``m``."""
    spatial = sig.shape[:-1]
    idx = np.flatnonzero(m)
    flat = sig.reshape(-1, fa.size)
    b1_flat = None if b1 is None else b1.reshape(-1)
    t1 = np.zeros(m.size)
    m0 = np.zeros(m.size)
    e1_lo, e1_hi = np.exp(-tr / t1_range[0]), np.exp(-tr / t1_range[1])
    a_nom = np.deg2rad(fa)
    n_chunks = max(1, int(np.ceil(idx.size / chunk_size)))
    step(progress, cancel, 0.0, "fitting T1 (DESPOT1)")
    for c in range(n_chunks):
        sel = idx[c * chunk_size:(c + 1) * chunk_size]
        s = flat[sel]
        a = a_nom[None, :] if b1_flat is None else b1_flat[sel, None] * a_nom[None, :]
        a = np.broadcast_to(a, s.shape)
        m0c, e1c = _despot1(s, a, tr, e1_lo, e1_hi, nonlinear, n_iter)
        t1[sel] = -tr / np.log(e1c)
        m0[sel] = m0c
        step(progress, cancel, (c + 1) / n_chunks * 0.95, f"fitting T1 (DESPOT1): {min((c + 1) * chunk_size, idx.size)}/{idx.size} voxels")
    return t1.reshape(spatial), m0.reshape(spatial)


def _pd_reference(m0, t1, m, csf_mask, csf_t1_threshold, t1_range):
    """Reference region of the PD normalisation and its M0 (see :func:`fit_vfa`, step 3).

    Returns
    -------
    (ndarray of bool, str, float)
        The reference voxels, their description and ``M0_csf`` (1 when not positive and finite).
    """
    spatial = m.shape
    if csf_mask is not None:
        csf = np.asarray(csf_mask).astype(bool)
        if csf.shape != spatial:
            raise InputError(f"CSF mask: shape {csf.shape} differs from the image grid {spatial}; use a mask on the SPGR grid.")
        ref = csf & m
        reference = "csf_mask"
    else:
        from scipy.ndimage import binary_erosion

        long_t1 = m & (t1 > csf_t1_threshold) & (t1 < 0.999 * t1_range[1])
        ref = long_t1 & binary_erosion(m, iterations=1) if m.ndim == 3 else long_t1
        reference = f"voxels with T1 > {csf_t1_threshold} s inside the mask eroded by 1 voxel"
        if ref.sum() < 10:
            ref = long_t1
            reference = f"voxels with T1 > {csf_t1_threshold} s"
    if ref.sum() >= 10:
        m0_csf = float(np.median(m0[ref]))
    else:
        if csf_mask is not None:
            raise InputError("CSF mask: fewer than 10 of its voxels were fitted; give a CSF mask inside the SPGR brain.")
        m0_csf = float(np.percentile(m0[m], 99.5)) if m.any() else 1.0
        reference = "99.5th percentile of M0 (no CSF found)"
        warnings.warn(
            f"PD normalisation: fewer than 10 voxels with T1 > {csf_t1_threshold} s; PD is normalised to the 99.5th "
            "percentile of M0 instead of CSF (give a CSF mask for a calibrated PD).",
            stacklevel=3,
        )
    if not np.isfinite(m0_csf) or m0_csf <= 0:
        m0_csf = 1.0
    return ref, reference, m0_csf


def _vfa_maps(t1, m0, pd, mtv, fa, tr, b1_corrected, nonlinear, m0_csf, reference, n_reference):
    """The :class:`Maps` of :func:`fit_vfa`, with units, descriptions and fit parameters."""
    return Maps(
        {"t1": t1, "m0": m0, "pd": pd, "mtv": mtv},
        units={"t1": "s", "m0": "a.u.", "pd": "fraction", "mtv": "fraction"},
        descriptions={
            "t1": "longitudinal relaxation time T1 (DESPOT1 variable flip angle%s)" % (", B1 corrected" if b1_corrected else ""),
            "m0": "equilibrium magnetisation M0 (includes the receive profile)",
            "pd": "proton density normalised to CSF (PD_csf = 1)",
            "mtv": "macromolecular tissue volume, 1 - PD",
        },
        method="DESPOT1" + (" + Levenberg-Marquardt" if nonlinear else " (linear)"),
        parameters={
            "flip_angles_deg": fa.tolist(),
            "tr_s": tr,
            "b1_corrected": b1_corrected,
            "m0_csf": m0_csf,
            "pd_reference": reference,
            "n_reference_voxels": n_reference,
        },
    )


def fit_vfa(signals, flip_angles_deg, tr, *, b1=None, mask=None, csf_mask=None, csf_t1_threshold: float = 3.0,
            t1_range: tuple[float, float] = (0.01, 10.0), nonlinear: bool = True, n_iter: int = 30,
            chunk_size: int = 200_000, progress=None, cancel=None) -> Maps:
    """T1, M0, PD and MTV from a variable-flip-angle SPGR series (DESPOT1), batched over voxels.

    Model (Ernst equation, b = B1 ratio)::

        S(a) = M0 sin(b a) (1 - E1) / (1 - E1 cos(b a)),     E1 = exp(-TR/T1)

    1. Linear DESPOT1 (Deoni et al. 2003): ``S/sin(ba) = E1 S/tan(ba) + M0 (1 - E1)``, a straight line
       per voxel; slope ``E1`` and intercept give ``T1 = -TR / ln E1`` and ``M0``. Exact for
       noise-free data from 2 or more angles.
    2. Nonlinear refinement (``nonlinear=True``): Levenberg-Marquardt on the Ernst equation itself
       (least squares on the signals, i.e. the maximum-likelihood fit for Gaussian noise, which the
       linearisation is not: it weights low-angle points by ``1/sin^2 a``), with closed-form 2 x 2
       normal equations per voxel, started from the linear fit, ``T1`` bounded to ``t1_range``.
    3. Proton density normalised to CSF: ``PD = M0 / M0_csf`` with ``M0_csf`` the median M0 over the
       reference region — ``csf_mask`` when given, else the fitted voxels with
       ``T1 > csf_t1_threshold`` (CSF T1 is about 4 s at 3 T, tissue below 2 s) that are not on the
       edge of the mask (mask eroded by one voxel: edge voxels share their volume with skull or air,
       which lowers M0 but not T1). When fewer than 10 such voxels exist (e.g. a
       crop without ventricles), the 99.5th percentile of M0 in the mask is used and a warning is
       issued. ``M0`` also holds the receive-coil profile, which is not corrected here.
    4. Macromolecular tissue volume ``MTV = 1 - PD`` (Mezer et al. 2013).

    Parameters
    ----------
    signals : array_like, shape (..., n)
        SPGR magnitudes, one volume per flip angle on the last axis.
    flip_angles_deg : array_like, shape (n,)
        Nominal flip angles (deg), at least 2 distinct.
    tr : float
        Repetition time (s).
    b1 : array_like or None, shape (...)
        Transmit B1 ratio on the same grid (1 = nominal). Without it, B1 errors bias T1 by about
        ``1/b^2`` (T1 scales with the square of the flip-angle error to first order).
    mask : array_like of bool or None
        Voxels to fit; default: every voxel whose signals are finite and positive and whose mean is
        above 10% of the 99th percentile of the mean signal.
    csf_mask : array_like of bool or None
        Reference region for the PD normalisation (see 3.).
    csf_t1_threshold : float
        T1 (s) above which a fitted voxel counts as CSF when ``csf_mask`` is not given.
    t1_range : (float, float)
        Bounds of T1 (s).
    nonlinear : bool
        Refine the linear fit by Levenberg-Marquardt.
    n_iter : int
        Levenberg-Marquardt iterations.
    chunk_size : int
        Voxels per batch (bounds memory).
    progress, cancel
        See :mod:`napari_myelin.utils.progress`.

    Returns
    -------
    Maps
        ``t1`` (s), ``m0`` (a.u.), ``pd`` (fraction of CSF), ``mtv`` (fraction); 0 outside the mask.
        ``parameters`` holds ``m0_csf`` and the reference region used.
    """
    fa, tr = check_protocol(flip_angles_deg, tr)
    sig = _check_signals(signals, fa.size)
    b1 = b1_ratio(b1, sig.shape[:-1])
    m = _mask_of(mask, sig)
    t1, m0 = _fit_t1_m0(sig, m, fa, tr, b1, t1_range, nonlinear, n_iter, chunk_size, progress, cancel)
    ref, reference, m0_csf = _pd_reference(m0, t1, m, csf_mask, csf_t1_threshold, t1_range)
    pd = np.where(m, m0 / m0_csf, 0.0)
    mtv = np.where(m, 1.0 - pd, 0.0)
    step(progress, cancel, 1.0, "T1 and PD done")
    return _vfa_maps(t1, m0, pd, mtv, fa, tr, b1 is not None, nonlinear, m0_csf, reference, int(ref.sum()))

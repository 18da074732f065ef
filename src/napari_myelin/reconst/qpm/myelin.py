"""QPM myelin map without an MT pulse: the myelin-water fraction of the voxel's water (0-1), from the
SPGR series (two-pool model, :func:`myelin_map` ``method="two-pool"``) or from T1 and PD maps
(``method="r1-pd"``), with the free-water share of the water taken from PD.

Free water from PD (both methods, when ``pd`` is given and ``pd_tissue`` is not ``None``)
    Brain tissue holds less water than CSF (white matter about 0.7 of CSF's; Neeb et al. 2006).
    Water in excess of ``pd_tissue`` is counted as free (CSF-like) water, and its share of the
    voxel's water is::

        W_fw = clip((PD - p_t) / (1 - p_t), 0, PD),       phi = W_fw / PD

    The myelin map is then the myelin water over *all* the water, ``f (1 - phi)``, where ``f``
    is the myelin-water fraction of the tissue water. This removes the CSF partial volume that
    otherwise lengthens T1 and reads as missing myelin, and, because DESPOT1 errors of ``M0``
    and ``T1`` are correlated, cancels part of the noise. Without ``pd``: ``phi = 0``.
``method="two-pool"`` (from the SPGR series, >= 3 flip angles)
    The SPGR branch of the mcDESPOT two-pool model with longitudinal exchange
    (:func:`~napari_myelin.reconst.qpm.signal.spgr_two_pool_signal`, Deoni et al. 2008), plus the
    non-exchanging free-water pool of Deoni et al. 2013 with its fraction ``phi`` fixed from PD::

        S(a) = M0 [(1 - phi) S_2pool(a; f, T1_m, T1_ie, tau_m) + phi S_ernst(a; T1_fw)]

    Pool T1s ``t1_m``, ``t1_ie``, ``t1_fw`` and the myelin residence time ``tau_m`` are fixed
    (literature values, configurable); per voxel the unknowns are ``M0`` and ``f``. ``S`` is
    linear in ``M0``, which is projected out (variable projection): for each ``f`` the best
    ``M0 = <S, g_f> / <g_f, g_f>`` with ``g_f`` the unit-M0 signal, and the residual is
    ``|S|^2 - <S, g_f>^2 / <g_f, g_f>``. It is scanned on 81 values over ``[0, f_max]``, then 41
    values around the best node; the minimum is refined by the vertex of a parabola and two
    Newton steps with central differences (noise-free data are recovered to 1e-6), all batched
    over voxels with a per-voxel B1 when given. Partial saturation at high flip angles is what
    reveals the short-T1 myelin water: the map is as good as the fixed pool parameters.
``method="r1-pd"`` (from T1 and PD maps, e.g. a scanner's own QPM / synthetic-MRI product)
    Fast exchange mixes the relaxation rates by water fraction (Warntjes et al. 2016)::

        R1 = phi R1_fw + (1 - phi) [f R1_m + (1 - f) R1_ie]
        f  = ((R1 - phi R1_fw) / (1 - phi) - R1_ie) / (R1_m - R1_ie)

    with ``R1 = 1/T1`` and ``phi`` from PD as above; the map is ``f (1 - phi)`` clipped to
    [0, 1].

References
----------
Deoni SCL et al., Magn Reson Med 60:1372-1387 (2008).
Deoni SCL, Matthews L, Kolind SH. One component? Two components? Three? The effect of including a
nonexchanging "free" water component in multicomponent driven equilibrium single pulse observation
of T1 and T2. Magn Reson Med 70:147-154 (2013).
Warntjes M et al., Modeling the presence of myelin and edema in the brain based on multi-parameter
quantitative MRI. Front Neurol 7:16 (2016).
Neeb H, Zilles K, Shah NJ. A new method for fast quantitative mapping of absolute water content in
vivo. NeuroImage 31:1156-1168 (2006).
Lu H et al., Routine clinical brain MRI sequences for use at 3.0 Tesla. J Magn Reson Imaging
22:13-22 (2005).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.qpm.calibration import MwfCalibration
from napari_myelin.reconst.qpm.inputs import _check_signals, _check_two_pool_angles, _mask_of, check_protocol
from napari_myelin.reconst.qpm.signal import T1_IE, T1_MYELIN, TAU_MYELIN, _two_pool, spgr_signal
from napari_myelin.reconst.transmit import b1_ratio
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step

#: Defaults of the ``r1-pd`` model (see :func:`myelin_map`).
T1_FREE_WATER = 4.0  # s, CSF at 3 T (about 4 - 4.4 s; Lu et al. 2005)
PD_TISSUE = 0.7  # water content of white matter relative to CSF (0.69-0.71; Neeb et al. 2006)


def _free_water_fraction(pd, pd_tissue):
    """Fraction of the voxel's water that is free water: ``phi = W_fw / PD``, ``W_fw = clip((PD - p_t)/(1 - p_t), 0, PD)``."""
    pd = np.asarray(pd, dtype=float)
    w_fw = np.clip((pd - pd_tissue) / (1.0 - pd_tissue), 0.0, np.maximum(pd, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pd > 0, w_fw / pd, 0.0)


def _two_pool_grid_fit(s, b1, fa, tr, f_grid, pars, phi=None):
    """Variable projection over a grid of f_m: for each f, M0 = <S,g>/<g,g>; residual |S|^2 - <S,g>^2/<g,g>.

    ``g = (1 - phi) g_2pool(f) + phi g_fw`` with ``g_fw`` the unit-M0 Ernst signal of free water.
    """
    bb = np.ones((s.shape[0], 1)) if b1 is None else b1[:, None]
    g = _two_pool(1.0, f_grid, fa, tr, pars["t1_m"], pars["t1_ie"], pars["tau_m"], bb)  # (N, F, n)
    if phi is not None:
        h = spgr_signal(1.0, pars["t1_fw"], fa, tr, b1=bb[:, 0])  # (N, n)
        g = (1.0 - phi)[:, None, None] * g + phi[:, None, None] * h[:, None, :]
    sg = np.einsum("vfn,vn->vf", g, s)
    gg = np.einsum("vfn,vfn->vf", g, g)
    cost = (s * s).sum(-1)[:, None] - sg**2 / gg
    return cost, sg / gg


def _fit_two_pool(s, b1, fa, tr, f_max, pars, phi=None, n_coarse=81, n_fine=41):
    """Coarse grid over [0, f_max], fine grid around the best node, parabolic vertex, two Newton polishes."""
    f_coarse = np.linspace(0.0, f_max, n_coarse)
    h = f_coarse[1] - f_coarse[0]
    cost, _ = _two_pool_grid_fit(s, b1, fa, tr, f_coarse[None, :], pars, phi)
    best = f_coarse[np.argmin(cost, axis=1)]
    fine = best[:, None] + np.linspace(-h, h, n_fine)[None, :]
    fine = np.clip(fine, -h, f_max + h)
    cost, _ = _two_pool_grid_fit(s, b1, fa, tr, fine, pars, phi)
    k = np.argmin(cost, axis=1)
    kk = np.clip(k, 1, n_fine - 2)
    rows = np.arange(s.shape[0])
    c0, c1, c2 = cost[rows, kk - 1], cost[rows, kk], cost[rows, kk + 1]
    hf = 2 * h / (n_fine - 1)
    denom = c0 - 2 * c1 + c2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(denom > 0, 0.5 * (c0 - c2) / denom, 0.0)
    interior = (k == kk)
    f = np.where(interior, fine[rows, kk] + np.clip(shift, -1, 1) * hf, fine[rows, k])
    # two Newton steps on the projected residual with central differences (polishes the vertex)
    for delta in (1e-4, 1e-5):
        trio = f[:, None] + np.array([-delta, 0.0, delta])[None, :]
        cost, _ = _two_pool_grid_fit(s, b1, fa, tr, trio, pars, phi)
        c0, c1, c2 = cost[:, 0], cost[:, 1], cost[:, 2]
        curv = c0 - 2 * c1 + c2
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curv > 0, 0.5 * (c0 - c2) / curv, 0.0)
        f = f + np.clip(np.nan_to_num(shift), -3, 3) * delta
    return np.clip(f, 0.0, f_max)


def _r1_pd_model(t1, phi, t1_m, t1_ie, t1_fw):
    """Tissue myelin-water fraction from R1 after removing the free-water share (see myelin_map)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.where(t1 > 0, 1.0 / t1, 0.0)
        r1_tissue = (r1 - phi / t1_fw) / (1.0 - phi)
        f = (r1_tissue - 1.0 / t1_ie) / (1.0 / t1_m - 1.0 / t1_ie)
    return np.where((phi < 0.999) & np.isfinite(f), f, 0.0)  # pure free water has no tissue


def _two_pool_map(sig, fa, tr, b1, mask, pda, use_fw, pd_tissue, pars, f_max, chunk_size, progress, cancel):
    """Two-pool fit of the SPGR series, chunked over the voxels of the mask.

    Returns
    -------
    (ndarray of bool, ndarray, ndarray or None)
        The mask, the myelin-water fraction ``f`` of the tissue water and the free-water share ``phi``
        (``None`` without the free-water pool).
    """
    spatial = sig.shape[:-1]
    if pda is not None and pda.shape != spatial:
        raise InputError(f"PD map: shape {pda.shape} differs from the SPGR grid {spatial}; use the PD from this series.")
    m = _mask_of(mask, sig)
    phi_all = _free_water_fraction(np.where(m, pda, 0.0), pd_tissue).reshape(-1) if use_fw else None
    idx = np.flatnonzero(m)
    flat = sig.reshape(-1, fa.size)
    b1f = None if b1 is None else b1.reshape(-1)
    f_all = np.zeros(m.size)
    n_chunks = max(1, int(np.ceil(idx.size / chunk_size)))
    step(progress, cancel, 0.0, "two-pool myelin fit")
    for c in range(n_chunks):
        sel = idx[c * chunk_size:(c + 1) * chunk_size]
        f_all[sel] = _fit_two_pool(flat[sel], None if b1f is None else b1f[sel], fa, tr, f_max, pars,
                                   None if phi_all is None else phi_all[sel])
        step(progress, cancel, (c + 1) / n_chunks, f"two-pool myelin fit: {min((c + 1) * chunk_size, idx.size)}/{idx.size} voxels")
    f = f_all.reshape(spatial)
    phi = None if phi_all is None else phi_all.reshape(spatial)
    return m, f, phi


def _r1_pd_map(t1, pda, mask, use_fw, pd_tissue, t1_m, t1_ie, t1_fw, progress, cancel):
    """Myelin-water fraction from T1 and PD maps by fast-exchange R1 mixing.

    Returns
    -------
    (ndarray of bool, ndarray, ndarray or None)
        The mask, the myelin-water fraction ``f`` of the tissue water and the free-water share ``phi``
        (``None`` without the free-water pool).
    """
    if t1 is None or pda is None:
        raise InputError("r1-pd myelin map: T1 and PD maps are both needed; give --t1 and --pd (or fit them from SPGR).")
    t1a = np.asarray(t1, dtype=float)
    if t1a.shape != pda.shape:
        raise InputError(f"r1-pd myelin map: T1 grid {t1a.shape} differs from PD grid {pda.shape}; give maps on one grid.")
    positive = t1a[np.isfinite(t1a) & (t1a > 0)]
    if positive.size and np.median(positive) > 50:
        raise InputError("T1 map: values look like milliseconds (median > 50); give T1 in seconds.")
    m = (t1a > 0) & np.isfinite(t1a) & np.isfinite(pda) & (pda > 0)
    if mask is not None:
        mk = np.asarray(mask).astype(bool)
        if mk.shape != t1a.shape:
            raise InputError(f"mask: shape {mk.shape} differs from the T1 grid {t1a.shape}; use a mask on the same grid.")
        m &= mk
    step(progress, cancel, 0.0, "r1-pd myelin map")
    phi = _free_water_fraction(np.where(m, pda, 0.0), pd_tissue) if use_fw else np.zeros(t1a.shape)
    f = _r1_pd_model(np.where(m, t1a, 1.0), np.where(m, phi, 0.0), t1_m, t1_ie, t1_fw)
    if not use_fw:
        phi = None
    step(progress, cancel, 1.0, "r1-pd myelin map done")
    return m, f, phi


def _myelin_maps(m, f, phi, desc, use_fw, pd_tissue, calibration, method, params):
    """The :class:`Maps` of :func:`myelin_map`: ``f (1 - phi)`` clipped to [0, 1], ``phi`` and the calibrated map."""
    total = f if phi is None else f * (1.0 - phi)
    qmap = np.where(m, np.clip(total, 0.0, 1.0), 0.0)
    arrays = {"qpm_myelin": qmap}
    units = {"qpm_myelin": "fraction"}
    descs = {"qpm_myelin": desc + (", free water from PD" if use_fw else "")}
    if phi is not None:
        arrays["free_water"] = np.where(m, phi, 0.0)
        units["free_water"] = "fraction"
        descs["free_water"] = f"free-water share of the voxel's water, (PD - {pd_tissue})/(1 - {pd_tissue}) / PD"
    if calibration is not None:
        cal = MwfCalibration.load(calibration) if not isinstance(calibration, MwfCalibration) else calibration
        arrays["mwf_qpm"] = np.where(m, cal.apply(qmap), 0.0)
        units["mwf_qpm"] = "%"
        descs["mwf_qpm"] = "MWF-calibrated QPM myelin map, MWF = c0 + c1 M + c2 M^2 (%)"
        params["calibration"] = cal.to_dict()
    return Maps(arrays, units=units, descriptions=descs, method=f"QPM myelin ({method})", parameters=params)


def myelin_map(signals=None, flip_angles_deg=None, tr=None, *, method: str = "two-pool", t1=None, pd=None, b1=None,
               mask=None, t1_m: float = T1_MYELIN, t1_ie: float = T1_IE, tau_m: float = TAU_MYELIN,
               t1_fw: float = T1_FREE_WATER, pd_tissue: float | None = PD_TISSUE, f_max: float = 0.4,
               calibration=None, chunk_size: int = 20_000, progress=None, cancel=None) -> Maps:
    """QPM myelin map (myelin-water fraction of the voxel's water, 0-1) without an MT pulse.

    ``method="two-pool"`` fits the SPGR series (>= 3 flip angles) with the two-pool model with exchange
    (mcDESPOT SPGR branch) plus a free-water pool, by variable projection over ``f``; ``method="r1-pd"``
    reads ``f`` from T1 and PD maps by fast-exchange R1 mixing. With ``pd`` (and ``pd_tissue`` not
    ``None``) both count the water in excess of ``pd_tissue`` as free water, of share ``phi``, and the
    map is ``f (1 - phi)``. The models, the fit and their references are in the docstring of
    :mod:`napari_myelin.reconst.qpm.myelin`.

    Parameters
    ----------
    signals : array_like, shape (..., n), optional
        SPGR series (``two-pool``).
    flip_angles_deg, tr
        Protocol (deg, s) of ``signals``.
    method : {"two-pool", "r1-pd"}
    t1 : array_like, optional
        T1 map (s) (``r1-pd``).
    pd : array_like, optional
        PD map normalised to CSF (required by ``r1-pd``; optional for ``two-pool``, where it sets the
        free-water fraction).
    b1 : array_like, optional
        B1 ratio on the grid (``two-pool``).
    mask : array_like of bool, optional
        Voxels to compute (default: see :func:`~napari_myelin.reconst.qpm.vfa.fit_vfa` for ``two-pool``,
        ``T1 > 0`` for ``r1-pd``).
    t1_m, t1_ie, tau_m : float
        Pool T1s and myelin-water residence time (s). Defaults 0.5, 1.05, 0.12 s (Deoni et al. 2008).
    t1_fw : float
        T1 of free water (s), default 4.0 s (CSF at 3 T, Lu et al. 2005).
    pd_tissue : float or None
        Water content of tissue relative to CSF above which water counts as free (default 0.7,
        white matter); ``None`` switches the free-water pool off.
    f_max : float
        Upper bound of ``f`` in the two-pool fit.
    calibration : MwfCalibration, dict, path or None
        When given, the MWF-calibrated map ``mwf_qpm`` (%) is added
        (see :func:`~napari_myelin.reconst.qpm.calibration.fit_mwf_calibration`).

    Returns
    -------
    Maps
        ``qpm_myelin`` (fraction), ``free_water`` (``phi``, fraction; when PD was used) and, with a
        calibration, ``mwf_qpm`` (%).
    """
    if method not in ("two-pool", "r1-pd"):
        raise InputError(f"method: '{method}' is not known; use 'two-pool' or 'r1-pd'.")
    if pd_tissue is not None and not 0 < pd_tissue < 1:
        raise InputError(f"pd_tissue: {pd_tissue} is not between 0 and 1; give the tissue water content relative to CSF (e.g. 0.7).")
    params: dict[str, Any] = {"method": method, "t1_m_s": t1_m, "t1_ie_s": t1_ie}
    pda = None if pd is None else np.asarray(pd, dtype=float)
    use_fw = pda is not None and pd_tissue is not None
    if method == "two-pool":
        if signals is None:
            raise InputError("two-pool myelin map: the SPGR series is missing; give the series or use method 'r1-pd' with T1 and PD maps.")
        fa, tr = check_protocol(flip_angles_deg, tr)
        _check_two_pool_angles(fa)
        sig = _check_signals(signals, fa.size)
        b1 = b1_ratio(b1, sig.shape[:-1])
        pars = {"t1_m": t1_m, "t1_ie": t1_ie, "tau_m": tau_m, "t1_fw": t1_fw}
        m, f, phi = _two_pool_map(sig, fa, tr, b1, mask, pda, use_fw, pd_tissue, pars, f_max, chunk_size, progress, cancel)
        params.update(flip_angles_deg=fa.tolist(), tr_s=tr, tau_m_s=tau_m, f_max=f_max, b1_corrected=b1 is not None)
        desc = "QPM myelin-water fraction, two-pool SPGR model with exchange (mcDESPOT SPGR branch)"
    else:
        m, f, phi = _r1_pd_map(t1, pda, mask, use_fw, pd_tissue, t1_m, t1_ie, t1_fw, progress, cancel)
        desc = "QPM myelin-water fraction, fast-exchange R1 mixing with free water from PD"
    if use_fw:
        params.update(t1_fw_s=t1_fw, pd_tissue=pd_tissue)
    return _myelin_maps(m, f, phi, desc, use_fw, pd_tissue, calibration, method, params)

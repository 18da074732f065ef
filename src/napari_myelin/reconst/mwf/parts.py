"""Partition of T2 distributions into short (myelin water) and medium (intra/extracellular) T2 pools
(DECAES ``T2partSEcorr``).

References
----------
Whittall K.P., MacKay A.L., "Quantitative interpretation of NMR relaxation data", J Magn Reson 84 (1989).
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.utils.errors import InputError


def _window_index(t2_times, window, name):
    """Bins of ``t2_times`` inside ``window`` (s, both ends included); ``InputError`` (naming ``name``) unless
    the window is increasing and positive."""
    lo, hi = (float(v) for v in window)
    if not (0 < lo < hi):
        raise InputError(f"{name}: ({lo}, {hi}) s is not an increasing positive window; use e.g. (0.01, 0.04).")
    return (t2_times >= lo) & (t2_times <= hi)


def t2_parts(result, *, sp_window=(0.01, 0.04), mp_window=(0.04, 0.2)) -> Maps:
    """Partition T2 distributions into short and medium T2 pools (DECAES T2partSEcorr).

    ``mwf = sum(d[SPWin]) / sum(d)`` (short-T2 / myelin water fraction), ``iewf = sum(d[MPWin]) / sum(d)``
    (intra/extracellular water fraction), ``sgm``/``mgm`` the geometric-mean T2 of each window
    ``exp(sum(d log T2) / sum(d))`` over the window, ``gmt2`` that of the whole distribution. Windows
    include both ends.

    Parameters
    ----------
    result : Maps or mapping
        Output of :func:`fit_t2_distribution` (needs ``distribution`` and ``t2_times``).
    sp_window, mp_window : (float, float)
        Short (myelin water) and medium (intra/extracellular) T2 windows in seconds (DECAES SPWin, MPWin).

    Returns
    -------
    Maps
        ``mwf`` and ``iewf`` (fractions 0-1), ``sgm``, ``mgm`` and ``gmt2`` (s).
    """
    dist = np.asarray(result["distribution"], dtype=np.float64)
    t2 = np.asarray(result["t2_times"], dtype=np.float64)
    sp = _window_index(t2, sp_window, "sp_window")
    mp = _window_index(t2, mp_window, "mp_window")
    logt2 = np.log(t2)
    total = dist.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_sum = dist[..., sp].sum(axis=-1)
        m_sum = dist[..., mp].sum(axis=-1)
        arrays = {
            "mwf": s_sum / total,
            "iewf": m_sum / total,
            "sgm": np.exp((dist[..., sp] * logt2[sp]).sum(axis=-1) / s_sum),
            "mgm": np.exp((dist[..., mp] * logt2[mp]).sum(axis=-1) / m_sum),
            "gmt2": np.exp((dist * logt2).sum(axis=-1) / total),
        }
    units = {"mwf": "fraction", "iewf": "fraction", "sgm": "s", "mgm": "s", "gmt2": "s"}
    desc = {
        "mwf": "myelin water fraction: short-T2 (SPWin) fraction of the T2 distribution",
        "iewf": "intra/extracellular water fraction: MPWin fraction of the T2 distribution",
        "sgm": "geometric-mean T2 of the short-T2 window",
        "mgm": "geometric-mean T2 of the medium-T2 window",
        "gmt2": "geometric-mean T2 of the whole distribution",
    }
    params = dict(getattr(result, "parameters", {}) or {})
    params.update({"sp_window": [float(v) for v in sp_window], "mp_window": [float(v) for v in mp_window]})
    return Maps(arrays, units, desc, method="DECAES-compatible T2 partition (T2partSEcorr)", parameters=params)


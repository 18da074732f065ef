"""The one entry point of the QPM estimator, :func:`qpm`: T1, PD, MTV and the QPM myelin map (and its
MWF calibration) from one SPGR series, by :func:`~napari_myelin.reconst.qpm.vfa.fit_vfa` then
:func:`~napari_myelin.reconst.qpm.myelin.myelin_map` on one mask.
"""

from __future__ import annotations

from napari_myelin.io.maps import Maps
from napari_myelin.reconst.qpm.inputs import _check_signals, _check_two_pool_angles, _mask_of, check_protocol
from napari_myelin.reconst.qpm.myelin import myelin_map
from napari_myelin.reconst.qpm.vfa import fit_vfa
from napari_myelin.utils.progress import subrange


def qpm(
    signals,
    flip_angles_deg,
    tr,
    *,
    b1=None,
    method: str = "two-pool",
    mask=None,
    csf_mask=None,
    calibration=None,
    progress=None,
    cancel=None,
    **model_params,
) -> Maps:
    """T1, PD, MTV, QPM myelin map (and MWF-calibrated map) from one SPGR series.

    :func:`fit_vfa` then :func:`myelin_map` (``two-pool`` on the signals, or ``r1-pd`` on the fitted
    T1), both with the fitted PD for the free-water share, on the same mask. This is what the CLI
    ``napari-myelin qpm`` and the widget call. ``model_params`` go to :func:`myelin_map`
    (``t1_m``, ``t1_ie``, ``tau_m``, ``t1_fw``, ``pd_tissue`` (``None``: no free-water pool), ``f_max``).

    Returns
    -------
    Maps
        ``t1`` (s), ``m0``, ``pd``, ``mtv``, ``qpm_myelin`` (fraction), ``free_water`` (fraction) and,
        with ``calibration``, ``mwf_qpm`` (%).
    """
    fa, tr = check_protocol(flip_angles_deg, tr)
    sig = _check_signals(signals, fa.size)
    if method == "two-pool":
        _check_two_pool_angles(fa)
    m = _mask_of(mask, sig)
    vfa = fit_vfa(sig, fa, tr, b1=b1, mask=m, csf_mask=csf_mask, progress=subrange(progress, 0.0, 0.3), cancel=cancel)
    if method == "two-pool":
        my = myelin_map(sig, fa, tr, method=method, b1=b1, mask=m, pd=vfa["pd"], calibration=calibration,
                        progress=subrange(progress, 0.3, 1.0), cancel=cancel, **model_params)
    else:
        my = myelin_map(method=method, t1=vfa["t1"], pd=vfa["pd"], mask=m, calibration=calibration,
                        progress=subrange(progress, 0.3, 1.0), cancel=cancel, **model_params)
    return Maps(
        {**vfa.arrays, **my.arrays},
        units={**vfa.units, **my.units},
        descriptions={**vfa.descriptions, **my.descriptions},
        method=f"{vfa.method}; {my.method}",
        parameters={**vfa.parameters, "myelin": my.parameters},
    )

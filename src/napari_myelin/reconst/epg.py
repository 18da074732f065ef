"""Extended phase graph (EPG) echo decay curves of a CPMG multi-echo spin-echo train.

The forward model of the multi-echo T2 fit (:mod:`napari_myelin.reconst.mwf`) and of the phantom's
multi-echo spin-echo simulator. Semantics follow DECAES.jl's ``EPGdecaycurve(ETL, alpha, TE, T2, T1,
beta)`` exactly:

* pulse train ``A*90, A*180, A*beta, A*beta, ...`` with ``A = alpha / 180`` (``alpha`` is the
  actual refocusing angle, i.e. the nominal 180 deg scaled by B1; ``beta`` the refocusing-pulse
  control angle, 180 deg for a standard CPMG train);
* per echo interval: relaxation for TE/2 (``E2 = exp(-TE/2/T2)`` on F states, ``E1 = exp(-TE/2/T1)``
  on Z states, no T1 recovery term), refocusing rotation about x (Hennig 1988), phase-state
  transition (Jones 1997 correction), relaxation for TE/2; the echo is ``|F_1^+|``;
* ``ETL`` phase states are tracked (higher orders cannot refocus within the train).

The state is kept in DECAES's real CPMG representation ``(F+, F-, Mz')`` with ``Mz = i Mz'``, in
which the rotation by ``a`` about x is the real matrix::

    [[cos^2(a/2),  sin^2(a/2),  sin a],
     [sin^2(a/2),  cos^2(a/2), -sin a],
     [-sin(a)/2,   sin(a)/2,    cos a]]

For ``alpha = beta = 180`` the curve is exactly ``exp(-n TE / T2)``.

References
----------
Hennig J., "Multiecho imaging sequences with low refocusing flip angles", J Magn Reson 78 (1988).
Jones J.A., "Optimal sampling strategies for the measurement of spin-spin relaxation times",
J Magn Reson 126 (1997).
Prasloski T. et al., "Applications of stimulated echo correction to multicomponent T2 analysis",
Magn Reson Med 67 (2012), appendix.
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020).
"""

from __future__ import annotations

import numpy as np

__all__ = ["epg_decay_curve", "epg_decay_curve_and_derivative"]


def epg_decay_curve(
    n_echoes: int,
    echo_spacing,
    t2,
    t1=1.0,
    refocusing_angle_deg=180.0,
    refocusing_control_angle_deg=180.0,
) -> np.ndarray:
    """Normalised CPMG echo amplitudes by the extended phase graph algorithm (DECAES semantics).

    Parameters
    ----------
    n_echoes : int
        Echo train length ``ETL`` (>= 1).
    echo_spacing : float or array_like
        Inter-echo time ``TE`` in seconds (the first echo is at ``TE``).
    t2 : float or array_like
        Transverse relaxation time in seconds.
    t1 : float or array_like, optional
        Longitudinal relaxation time in seconds (DECAES default 1 s).
    refocusing_angle_deg : float or array_like, optional
        Actual refocusing flip angle ``alpha`` in degrees (180 x B1 for a nominal 180 deg pulse).
    refocusing_control_angle_deg : float or array_like, optional
        Refocusing-pulse control angle ``beta`` in degrees (180 for a standard CPMG train).

    Returns
    -------
    ndarray, shape ``broadcast(echo_spacing, t2, t1, alpha, beta).shape + (n_echoes,)``
        Echo amplitudes ``|F_1^+|`` at ``TE, 2 TE, ..., n TE`` for unit initial magnetisation
        (float64). At ``alpha = beta = 180`` these equal ``exp(-n TE / T2)``.
    """
    n = int(n_echoes)
    if n < 1:
        raise ValueError("n_echoes must be >= 1")
    args = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (echo_spacing, t2, t1, refocusing_angle_deg, refocusing_control_angle_deg))
    )
    shape = args[0].shape
    dc = _epg_signed(n, *(x.reshape(-1) for x in args))
    return np.abs(dc).reshape(shape + (n,))


def epg_decay_curve_and_derivative(n_echoes, echo_spacing, t2, t1=1.0, refocusing_angle_deg=180.0,
                                   refocusing_control_angle_deg=180.0):
    """Decay curve and its exact derivative with respect to the refocusing angle (per degree).

    The derivative is computed by complex-step differentiation of the same recursion
    (``d|F| / d alpha = sign(F) Im F(alpha + i h) / h``, exact to rounding), which is what DECAES
    obtains with forward-mode automatic differentiation.

    Returns
    -------
    curve, derivative : ndarray, shape ``broadcast shape + (n_echoes,)``
    """
    n = int(n_echoes)
    args = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (echo_spacing, t2, t1, refocusing_angle_deg, refocusing_control_angle_deg))
    )
    shape = args[0].shape
    value, deriv = _signed_curve_and_derivative(n, *(x.reshape(-1) for x in args))
    sign = np.where(value < 0, -1.0, 1.0)
    return np.abs(value).reshape(shape + (n,)), (sign * deriv).reshape(shape + (n,))


def _signed_curve_and_derivative(n, te, t2, t1, alpha, beta):
    """Signed F1+ amplitudes and their alpha-derivatives (per degree) by complex step, flat inputs."""
    h = 1e-30
    stepped = _epg_signed(n, te, t2, t1, alpha + 1j * h, beta)
    return stepped.real, stepped.imag / h


def _epg_signed(n, te, t2, t1, alpha, beta):
    """EPG recursion on flat arrays; returns the signed F1+ amplitudes ``(b, n)`` (complex if alpha is)."""
    b = te.size
    dtype = np.result_type(alpha, np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        e2 = np.exp(-(te / 2.0) / t2)
        e1 = np.exp(-(te / 2.0) / t1)
    scale = alpha / 180.0
    a_ex = (scale * 90.0) * (np.pi / 180.0)
    a_1 = (scale * 180.0) * (np.pi / 180.0)
    a_i = (scale * beta) * (np.pi / 180.0)

    def rotation(a):
        c2, s2 = np.cos(a / 2) ** 2, np.sin(a / 2) ** 2
        sa, ca = np.sin(a), np.cos(a)
        return [v[:, None] for v in (c2, s2, sa, ca)]

    r_1, r_i = rotation(a_1), rotation(a_i)
    e2c, e1c = e2[:, None], e1[:, None]

    # (F+, F-, Z') per phase order 1..n, one (b, n) array each
    fp = np.zeros((b, n), dtype=dtype)
    fm = np.zeros((b, n), dtype=dtype)
    z = np.zeros((b, n), dtype=dtype)
    fp[:, 0] = np.sin(a_ex)
    dc = np.empty((b, n), dtype=dtype)
    for i in range(n):
        c2, s2, sa, ca = r_1 if i == 0 else r_i
        # only orders <= i+1 are populated before pulse i+1
        k = min(i + 1, n)
        p, m, q = fp[:, :k] * e2c, fm[:, :k] * e2c, z[:, :k] * e1c
        np_ = c2 * p + s2 * m + sa * q
        nm = s2 * p + c2 * m - sa * q
        nz = (m - p) * (sa / 2) + ca * q
        # transition between phase states, then relaxation for TE/2
        kk = min(k + 1, n)
        fp[:, 0] = nm[:, 0]
        fp[:, 1:kk] = np_[:, : kk - 1]
        fm[:, : k - 1] = nm[:, 1:k]
        fm[:, k - 1] = 0.0
        z[:, :k] = nz
        fp[:, :kk] *= e2c
        fm[:, :k] *= e2c
        z[:, :k] *= e1c
        dc[:, i] = fp[:, 0]
    return dc

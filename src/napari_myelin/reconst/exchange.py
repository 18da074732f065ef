"""Two exchanging pools: the closed-form propagator ``expm(A t)`` of their 2 x 2 longitudinal Bloch-McConnell matrix.

A helper below the estimators: QPM's two-pool SPGR model (myelin and intra/extra-cellular water,
:mod:`napari_myelin.reconst.qpm.signal`) and the phantom's magnetization-transfer model (free water and the
bound macromolecular pool, :mod:`napari_myelin.sims.phantom.mt`) both evolve ``dM/dt = A (M - M_eq)`` between
pulses, element-wise over arrays of voxels.

Reference
---------
McConnell HM. Reaction rates by nuclear magnetic resonance. J Chem Phys 28:430-431 (1958).
"""

from __future__ import annotations

import numpy as np


def expm2(a11, a12, a21, a22, t):
    """Closed-form ``expm(A t)`` of a 2 x 2 matrix with real eigenvalues, element-wise over arrays.

    ``expm(A t) = exp(s t) [cosh(q t) I + sinh(q t)/q (A - s I)]`` with ``s = tr(A)/2``,
    ``q = sqrt(s^2 - det A)`` (``sinh(q t)/q -> t`` as ``q -> 0``). Exchange matrices obey detailed balance,
    so they are similar to a symmetric matrix and their eigenvalues are real.

    Parameters
    ----------
    a11, a12, a21, a22 : array_like
        Elements of ``A`` (1/s), broadcast together.
    t : float
        Time (s).

    Returns
    -------
    tuple of 4 ndarray
        ``(E11, E12, E21, E22)`` of ``E = expm(A t)``.
    """
    s = 0.5 * (a11 + a22)
    disc = np.maximum(0.25 * (a11 - a22) ** 2 + a12 * a21, 0.0)
    q = np.sqrt(disc)
    qt = q * t
    ch = np.cosh(qt)
    small = qt < 1e-6
    sh_q = np.where(small, t * (1.0 + qt**2 / 6.0), np.sinh(qt) / np.where(small, 1.0, q))
    es = np.exp(s * t)
    return (
        es * (ch + sh_q * (a11 - s)),
        es * (sh_q * a12),
        es * (sh_q * a21),
        es * (ch + sh_q * (a22 - s)),
    )

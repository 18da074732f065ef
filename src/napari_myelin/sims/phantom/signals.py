"""Signal equations of the four acquisitions, the gradient scheme and the noise model.

Public so that tests compare them with independent formulas: :func:`simulate_mese` (multi-pool CPMG
by the extended phase graph, Hennig 1991), :func:`simulate_spgr` (two exchanging tissue pools + CSF,
Deoni et al. 2008), :func:`simulate_dwi` (the DKI signal, Jensen & Helpern 2010),
:func:`simulate_field` (dipole field of a susceptibility map on a fine grid, Marques & Bowtell 2005),
:func:`gradient_scheme` (b = 0, 1000, 2000 s/mm^2). Times in s, angles in degrees, b-values in
s/mm^2, fields in ppm. :func:`_rician` adds Rician noise (complex Gaussian, magnitude taken).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.sims.phantom.constants import DWI_B0S, DWI_BVALS, DWI_DIRS, MESE_ECHOES, MESE_TE, T1, TAU_MYELIN
from napari_myelin.sims.phantom.geometry import block_mean


def simulate_mese(fractions, t2, t1, refocusing_deg, n_echoes: int = MESE_ECHOES, echo_spacing: float = MESE_TE,
                  angle_step: float = 0.25) -> np.ndarray:
    """Multi-pool CPMG echo trains by the extended phase graph, tabulated for speed.

    ``S_n = sum_p f_p EPG_n(T2_p, T1_p, alpha)``; EPG curves (:func:`.epg.epg_decay_curve`) are
    computed once per distinct ``(T2, T1)`` on an ``angle_step`` grid of refocusing angles and
    interpolated linearly in angle (exact on grid angles, e.g. 180 deg).

    Parameters
    ----------
    fractions, t2, t1 : ndarray, shape (N, P)
        Pool signal fractions, T2 (s) and T1 (s) of P pools in N voxels.
    refocusing_deg : ndarray, shape (N,)
        Actual refocusing angle (deg).

    Returns
    -------
    ndarray, shape (N, n_echoes)
    """
    from napari_myelin.reconst.epg import epg_decay_curve

    fractions, t2, t1 = (np.atleast_2d(np.asarray(a, float)) for a in (fractions, t2, t1))
    alpha = np.asarray(refocusing_deg, float).reshape(-1)
    lo = np.floor(alpha.min() / angle_step) * angle_step
    hi = np.ceil(alpha.max() / angle_step) * angle_step
    grid = np.arange(lo, hi + angle_step / 2, angle_step)
    pos = (alpha - lo) / angle_step
    i0 = np.clip(np.floor(pos).astype(int), 0, grid.size - 1)
    i1 = np.minimum(i0 + 1, grid.size - 1)
    w = (pos - i0)[:, None]
    out = np.zeros((alpha.size, int(n_echoes)))
    pairs = np.stack([t2.ravel(), t1.ravel()], axis=1)
    keys = pairs[:, 0] + 1j * pairs[:, 1]  # exact (T2, T1) pairs as one sortable key
    uniq_keys, inverse = np.unique(keys, return_inverse=True)
    uniq = np.stack([uniq_keys.real, uniq_keys.imag], axis=1)
    inverse = inverse.reshape(t2.shape)
    table = epg_decay_curve(n_echoes, echo_spacing, uniq[:, 0:1], uniq[:, 1:2], grid[None, :])  # (U, A, n)
    for p in range(t2.shape[1]):
        curve = (1 - w) * table[inverse[:, p], i0] + w * table[inverse[:, p], i1]
        out += fractions[:, p:p + 1] * curve
    return out


def simulate_spgr(m0_tissue, f_m, t1_ie, m0_csf, flip_angles_deg, tr, b1=None, *, t1_m=T1["my"],
                  t1_csf=T1["csf"], tau_m=TAU_MYELIN) -> np.ndarray:
    """SPGR signal: two exchanging tissue pools (:func:`.qpm.spgr_two_pool_signal`) + CSF (Ernst).

    Returns
    -------
    ndarray, shape ``broadcast(...) + (n_flip,)``
    """
    from napari_myelin.reconst.qpm import spgr_signal, spgr_two_pool_signal

    tissue = spgr_two_pool_signal(m0_tissue, f_m, flip_angles_deg, tr, t1_m=t1_m, t1_ie=t1_ie, tau_m=tau_m, b1=b1)
    csf = spgr_signal(m0_csf, t1_csf, flip_angles_deg, tr, b1=b1)
    return tissue + csf


def simulate_dwi(dki_params, bvals, bvecs, s0=1.0) -> np.ndarray:
    """DWI signal of DKI parameters (``(..., 27)``: evals, evecs, kt), vectorised.

    ``S(n, b) = S0 exp(-b D(n) + b^2 MD^2 W(n) / 6)`` computed exactly as
    ``dipy.reconst.dki.dki_prediction`` (same design matrix and parameter vector) but for all
    voxels at once (dipy loops over voxels in Python).

    Parameters
    ----------
    dki_params : ndarray, shape (..., 27)
    bvals : ndarray, shape (M,)
        s/mm^2.
    bvecs : ndarray, shape (M, 3)
        Unit directions in the frame of the tensors.
    s0 : float or ndarray broadcastable to ``dki_params.shape[:-1]``

    Returns
    -------
    ndarray, shape ``dki_params.shape[:-1] + (M,)``
    """
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dki import design_matrix

    params = np.asarray(dki_params, float)
    lead = params.shape[:-1]
    p = params.reshape(-1, 27)
    gtab = gradient_table(np.asarray(bvals, float), bvecs=np.asarray(bvecs, float), b0_threshold=50)
    a = design_matrix(gtab)  # (M, 22): 6 dt (lower triangular), 15 kt * MD^2, -log S0
    evals, evecs = p[:, :3], p[:, 3:12].reshape(-1, 3, 3)
    dt = np.einsum("nij,nj,nkj->nik", evecs, evals, evecs)
    low = np.stack([dt[:, 0, 0], dt[:, 1, 0], dt[:, 1, 1], dt[:, 2, 0], dt[:, 2, 1], dt[:, 2, 2]], axis=1)
    md = evals.sum(axis=1) / 3.0
    s0 = np.broadcast_to(np.asarray(s0, float), lead).reshape(-1)
    with np.errstate(divide="ignore"):
        x = np.concatenate([low, p[:, 12:] * (md * md)[:, None], -np.log(s0)[:, None]], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = np.exp(x @ a.T)
    sig[s0 == 0] = 0.0
    return sig.reshape(lead + (a.shape[0],))


def simulate_field(chi_fine: np.ndarray, fine_affine: np.ndarray, factor: int = 2) -> np.ndarray:
    """Field (ppm) of a susceptibility map given on a fine grid, averaged onto the acquisition grid.

    The dipole kernel uses B0 = world z expressed in the (possibly oblique) voxel axes
    (:func:`.dipole.b0_direction`) and automatic zero padding (:func:`.dipole.forward_field`).
    """
    from napari_myelin.reconst.dipole import b0_direction, forward_field

    zooms = np.sqrt((fine_affine[:3, :3] ** 2).sum(axis=0))
    f = forward_field(chi_fine.astype(np.float32), zooms, b0_direction(fine_affine), pad="auto")
    return block_mean(f, factor)


def fibonacci_sphere(n: int, offset: float = 0.0) -> np.ndarray:
    """``n`` near-uniform unit vectors on the upper hemisphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    phi = np.pi * (1 + 5 ** 0.5) * i + offset
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def gradient_scheme() -> tuple[np.ndarray, np.ndarray]:
    """b-values (s/mm^2) and unit directions: 5 b=0 interleaved, 32 directions at b=1000 and 2000."""
    bvals, bvecs = [], []
    for s, b in enumerate(DWI_BVALS):
        d = fibonacci_sphere(DWI_DIRS, offset=0.7 * s)
        bvals += [b] * DWI_DIRS
        bvecs += list(d)
    bvals, bvecs = np.array(bvals), np.array(bvecs)
    slots = np.linspace(0, bvals.size, DWI_B0S, endpoint=False).astype(int)
    bvals = np.insert(bvals, slots, 0.0)
    bvecs = np.insert(bvecs, slots, 0.0, axis=0)
    return bvals, bvecs

def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise: magnitude of ``signal`` + complex Gaussian noise of ``sigma`` (float32, in place)."""
    out = rng.standard_normal(signal.shape, dtype=np.float32)
    out *= sigma
    out += signal
    np.square(out, out=out)
    im = rng.standard_normal(signal.shape, dtype=np.float32)
    im *= sigma
    np.square(im, out=im)
    out += im
    return np.sqrt(out, out=out)


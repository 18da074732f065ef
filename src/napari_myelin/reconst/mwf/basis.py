"""EPG bases of the T2 distribution fit: tables over refocusing angles and the bases of a chunk of voxels.

The basis ``A(alpha)`` (n_TE, n_T2) holds the EPG echo amplitudes
(:func:`napari_myelin.reconst.epg.epg_decay_curve`) of ``n_t2`` log-spaced T2 times at the refocusing angle
``alpha`` (T1 fixed). It is tabulated once per protocol on DECAES's flip-angle search grid (with exact
alpha-derivatives, for the surrogate search of :mod:`napari_myelin.reconst.mwf.flip_angle`) and on a fine
0.25 deg grid between which bases at arbitrary per-voxel angles are cubic Hermite interpolated.
:class:`_ChunkBases` gives a chunk of voxels its angles and bases: fixed, from an angle map (B1) or
optimised per voxel.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

from napari_myelin.reconst.epg import _signed_curve_and_derivative, epg_decay_curve, epg_decay_curve_and_derivative
from napari_myelin.reconst.mwf.flip_angle import _optimise_alpha


@functools.lru_cache(maxsize=8)
def _basis_table(n_te, te, t2_key, t1, beta, lo, hi):
    return _BasisTable(n_te, te, np.asarray(t2_key), t1, beta, lo, hi)


@functools.lru_cache(maxsize=8)
def _grid_bases(n_te, te, t2_key, t1, beta, lo, n_angles):
    """Bases and alpha-derivatives on DECAES's flip-angle search grid (n_angles, n_te, n_t2)."""
    grid = np.linspace(lo, 180.0, n_angles)
    a, d = epg_decay_curve_and_derivative(n_te, te, np.asarray(t2_key)[None, :], t1, grid[:, None], beta)
    return grid, np.ascontiguousarray(np.swapaxes(a, 1, 2)), np.ascontiguousarray(np.swapaxes(d, 1, 2))


class _BasisTable:
    """EPG bases and exact alpha-derivatives on a fine angle grid; cubic Hermite interpolation between.

    With a 0.25 deg spacing the interpolation error is below 1e-10 (absolute, signal normalised to 1), so bases at
    arbitrary per-voxel angles are obtained without a per-voxel EPG run.
    """

    def __init__(self, n_te, te, t2_times, t1, beta, lo, hi, step_deg=0.25):
        n = max(int(math.ceil((hi - lo) / step_deg)) + 1, 2)
        self.angles = np.linspace(lo, hi, n)
        # signed amplitudes are interpolated (|F| has kinks where a small echo crosses zero)
        na, nt = n, t2_times.size
        args = np.broadcast_arrays(te, t2_times[None, :], t1, self.angles[:, None], beta)
        a, d = _signed_curve_and_derivative(n_te, *(x.reshape(-1) for x in args))
        a, d = a.reshape(na, nt, n_te), d.reshape(na, nt, n_te)
        self.A = np.ascontiguousarray(np.swapaxes(a, 1, 2))  # (n_angles, n_te, n_t2)
        self.dA = np.ascontiguousarray(np.swapaxes(d, 1, 2))

    def __call__(self, alpha: np.ndarray) -> np.ndarray:
        """Bases ``|A(alpha)|`` (B, n_te, n_t2) at the angles ``alpha`` (B,) in degrees (clipped to the table)."""
        g = self.angles
        alpha = np.clip(np.asarray(alpha, dtype=np.float64), g[0], g[-1])
        k = np.clip(np.searchsorted(g, alpha, side="right") - 1, 0, g.size - 2)
        out = np.empty((alpha.size,) + self.A.shape[1:])
        _hermite_rows(self.A, self.dA, g, k, alpha, out)
        return out


@njit(nogil=True, cache=True)
def _hermite_rows(A, dA, g, k, alpha, out):
    """``out[r] = |H(alpha_r)|``: cubic Hermite interpolation of the table ``A``, ``dA = dA/d alpha`` between
    ``g[k_r]`` and ``g[k_r + 1]``."""
    for r in range(alpha.size):
        i = k[r]
        h = g[i + 1] - g[i]
        t = (alpha[r] - g[i]) / h
        h00 = (1 + 2 * t) * (1 - t) ** 2
        h10 = t * (1 - t) ** 2 * h
        h01 = t * t * (3 - 2 * t)
        h11 = t * t * (t - 1) * h
        A0, A1, D0, D1, o = A[i], A[i + 1], dA[i], dA[i + 1], out[r]
        for m in range(o.shape[0]):
            for n in range(o.shape[1]):
                o[m, n] = abs(h00 * A0[m, n] + h10 * D0[m, n] + h01 * A1[m, n] + h11 * D1[m, n])


class _ChunkBases:
    """Refocusing angles and EPG bases of a chunk of voxels, in one of three modes.

    * ``fixed`` (deg): one angle for every voxel, one basis broadcast over the chunk;
    * ``alpha_map`` (n_voxels,) deg: the voxels' own angles (e.g. ``180 * B1``), bases from the fine table
      spanning ``[min(min_ref_angle, map), max(180, map)]`` over the fitted voxels ``sel``;
    * neither: the angle optimised per voxel (DECAES surrogate search on ``n_ref_angles`` angles in
      ``[min_ref_angle, 180]``), bases from the fine table.
    """

    def __init__(self, n_te, spacing, t2_times, t1, refocusing_control_angle, *, fixed, alpha_map, sel,
                 min_ref_angle, n_ref_angles):
        self.fixed, self.alpha_map = fixed, alpha_map
        self.mineval = min(5, int(n_ref_angles))
        if fixed is not None:
            self.A_fixed = np.swapaxes(
                epg_decay_curve(n_te, spacing, t2_times[None, :], t1, fixed, refocusing_control_angle)[0], 0, 1)
            return
        lo_a = float(min_ref_angle)
        hi_a = 180.0
        if alpha_map is not None and sel.any():
            lo_a = min(lo_a, float(alpha_map[sel].min()))
            hi_a = max(hi_a, float(alpha_map[sel].max()))
        t2_key = tuple(float(v) for v in t2_times)
        self.table = _basis_table(n_te, spacing, t2_key, float(t1), float(refocusing_control_angle), lo_a, hi_a)
        if alpha_map is None:
            self.grid, self.Ag, self.dAg = _grid_bases(n_te, spacing, t2_key, float(t1),
                                                       float(refocusing_control_angle), float(min_ref_angle),
                                                       int(n_ref_angles))

    def __call__(self, ids, b):
        """Angles (B,), bases (B, n_te, n_t2) and the angle search's last NNLS solution (B, n_t2) or ``None``
        for the voxels ``ids`` with normalised decays ``b`` (B, n_te)."""
        B = ids.size
        if self.fixed is not None:
            return np.full(B, self.fixed), np.broadcast_to(self.A_fixed, (B,) + self.A_fixed.shape), None
        if self.alpha_map is not None:
            alpha = self.alpha_map[ids]
            return alpha, self.table(alpha), None
        alpha, support = _optimise_alpha(b, self.grid, self.Ag, self.dAg, self.mineval)
        return alpha, self.table(alpha), support

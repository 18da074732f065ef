"""Per-voxel refocusing flip angle: DECAES's surrogate search over a discrete angle grid.

The NNLS residual ``u(alpha) = ||A(alpha) x - b||^2`` and its exact derivative are evaluated on a
coarse-to-fine subset of ``n_ref_angles`` angles linearly spaced in ``[min_ref_angle, 180]`` deg
(breadth-first bisection to ``min(5, n_ref_angles)`` angles, then the grid cell around the surrogate's
minimum), and ``alpha`` is the minimum of the cubic Hermite spline surrogate through the evaluated points
(DECAES ``CubicHermiteSplineSurrogate`` + ``bisection_search``). All voxels of a chunk advance together:
each evaluation is one batched NNLS solve.

References
----------
Prasloski T. et al., "Applications of stimulated echo correction to multicomponent T2 analysis",
Magn Reson Med 67 (2012).
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.reconst.nnls import batched_nnls


def _init_points(P: int, mineval: int, maxeval: int) -> list[int]:
    """Grid indices evaluated by DECAES's breadth-first bisection initialisation (data independent)."""
    seen: list[int] = []

    def box(lo, hi):
        for i in (lo, hi):
            if len(seen) >= maxeval:
                return
            if i not in seen:
                seen.append(i)

    def init(lo, hi, depth):
        if depth <= 0:
            return
        box(lo, hi)
        if len(seen) >= mineval or hi - lo <= 1:
            return
        mid = (lo + hi) // 2
        init(lo, mid, depth - 1)
        init(mid, hi, depth - 1)

    for depth in range(1, mineval + 1):
        init(0, P - 1, depth)
        if len(seen) >= mineval:
            break
    return seen


def _hermite_min(a, b, u0, u1, m0, m1):
    """Vectorised minimum of the cubic Hermite interpolant on [a, b] (DECAES CubicHermiteInterpolator)."""
    r = (b - a) / 2.0
    m0, m1 = r * m0, r * m1
    du, dm, su, sm = u1 - u0, m1 - m0, u1 + u0, m1 + m0
    c0, c1, c2, c3 = su / 2.0 - dm / 4.0, (3 * du - sm) / 4.0, dm / 4.0, (sm - du) / 4.0
    left = u0 < u1
    xend = np.where(left, a, b)
    uend = np.where(left, u0, u1)
    delta = 3.0 * (u0 - u1)
    theta = delta / 2.0 + (m0 + m1)
    gamma = theta * theta - m0 * m1
    gamma = np.where(gamma > 0, -np.sqrt(np.where(gamma > 0, gamma, 0.0)), 0.0)
    p = -(delta + (m0 + m1))
    q = 2.0 * gamma + (m0 - m1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = p / q
    y = ((c3 * t + c2) * t + c1) * t + c0
    inner = (np.abs(p) < np.abs(q)) & (q != 0) & (y < uend)
    xin = np.clip(r * t + (a + b) / 2.0, a, b)
    return np.where(inner, xin, xend), np.where(inner, y, uend)


def _suggest(grid: np.ndarray, seen: np.ndarray, u: np.ndarray, du: np.ndarray):
    """Minimum of the Hermite spline through each row's evaluated grid points."""
    B, P = seen.shape
    nmax = int(seen.sum(axis=1).max())
    key = np.where(seen, np.arange(P)[None], P + np.arange(P)[None])
    order = np.argsort(key, axis=1)[:, :nmax]
    cnt = seen.sum(axis=1)
    gu = np.take_along_axis(u, order, 1)
    gd = np.take_along_axis(du, order, 1)
    gx = grid[order]
    best_x, best_u = gx[:, 0].copy(), gu[:, 0].copy()
    for k in range(1, nmax):
        valid = k < cnt
        x, y = _hermite_min(gx[:, k - 1], gx[:, k], gu[:, k - 1], gu[:, k], gd[:, k - 1], gd[:, k])
        better = valid & (y < best_u)
        best_x = np.where(better, x, best_x)
        best_u = np.where(better, y, best_u)
    return best_x, best_u


def _loss_at(Ag, dAg, Gg, idx, b, init=None):
    """NNLS residual ``u``, ``du/d alpha`` and solution at grid angles ``idx`` (B,) for decays ``b`` (B, m).

    ``init`` (B, n) warm-starts the active sets (the result does not depend on it).
    """
    ks, inv = np.unique(idx, return_inverse=True)
    c = np.empty((b.shape[0], Ag.shape[2]))
    for j, k in enumerate(ks):  # one product per distinct angle (a few)
        rows = inv == j
        c[rows] = b[rows] @ Ag[k]
    x = batched_nnls(Gg, c, index=idx, init=init)
    res = np.empty_like(b)
    dres = np.empty_like(b)
    for j, k in enumerate(ks):
        rows = inv == j
        res[rows] = x[rows] @ Ag[k].T - b[rows]
        dres[rows] = x[rows] @ dAg[k].T
    return np.einsum("bm,bm->b", res, res), 2.0 * np.einsum("bm,bm->b", dres, res), x


def _optimise_alpha(b, grid, Ag, dAg, mineval):
    """Per-voxel refocusing angle: DECAES surrogate search; returns (alpha, last NNLS solution)."""
    B, P = b.shape[0], grid.size
    Gg = np.einsum("pmi,pmj->pij", Ag, Ag)
    seen = np.zeros((B, P), dtype=bool)
    u = np.full((B, P), np.nan)
    du = np.full((B, P), np.nan)
    init = sorted(_init_points(P, mineval, P), reverse=True)
    sols = np.empty((len(init), B, Ag.shape[2]))
    support = None
    for i, k in enumerate(init):  # neighbouring angles in turn: better warm starts
        uu, dd, support = _loss_at(Ag, dAg, Gg, np.full(B, k), b, support)
        seen[:, k], u[:, k], du[:, k] = True, uu, dd
        sols[i] = support
    x, _ = _suggest(grid, seen, u, du)
    if P > len(init):
        hi = np.clip(np.searchsorted(grid, x, side="right"), 1, P - 1)
        lo = hi - 1
        # warm start at the evaluated angle nearest the cell, then from the cell's lower corner
        nearest = np.argmin(np.abs(np.asarray(init)[:, None] - lo[None, :]), axis=0)
        support = sols[nearest, np.arange(B)]
        for corner in (lo, hi):
            need = ~seen[np.arange(B), corner]
            r = np.nonzero(need)[0]
            if r.size:
                uu, dd, sup = _loss_at(Ag, dAg, Gg, corner[r], b[r], support[r])
                seen[r, corner[r]], u[r, corner[r]], du[r, corner[r]] = True, uu, dd
                support[r] = sup
        x, _ = _suggest(grid, seen, u, du)
    return x, support


"""Myelin water fraction from multi-echo spin echo: T2 distributions by regularised NNLS (DECAES-exact).

A re-implementation of DECAES.jl's ``T2mapSEcorr`` / ``T2partSEcorr`` (the UBC algorithm) in which
all voxels are fitted together as batched array work:

1. each voxel's decay ``b`` is divided by its maximum (``decay_scale``);
2. the refocusing flip angle ``alpha`` is optimised (unless given): the NNLS residual
   ``u(alpha) = ||A(alpha) x - b||^2`` and its exact derivative are evaluated on a coarse-to-fine
   subset of ``n_ref_angles`` angles linearly spaced in ``[min_ref_angle, 180]`` deg
   (breadth-first bisection to ``min(5, n_ref_angles)`` angles, then the grid cell around the
   surrogate's minimum), and ``alpha`` is the minimum of the cubic Hermite spline surrogate
   through the evaluated points (DECAES ``CubicHermiteSplineSurrogate`` + ``bisection_search``);
3. the EPG basis ``A(alpha)`` (:func:`napari_myelin.reconst.epg.epg_decay_curve`, ``n_t2`` log-spaced
   T2 times in ``t2_range``, T1 fixed) and the T2 distribution
   ``x = argmin_{x>=0} ||A x - b||^2 + mu^2 ||x||^2`` with ``mu`` chosen by ``reg``:

   * ``none``: ``mu = 0``;
   * ``chi2``: ``||A x_mu - b||^2 = Chi2Factor ||A x_0 - b||^2`` (root in ``log mu`` by bracketing from
     ``log mu = -4`` then Brent, stopping when the relative misfit is below ``1e-3 (Chi2Factor - 1)``);
   * ``mdp``: Morozov's discrepancy principle ``||A x_mu - b||^2 = n_TE sigma^2`` with
     ``sigma = noise_level / decay_scale``;
   * ``gcv``: minimum over ``log mu in [-8, 2]`` of ``||A x_mu - b||^2 / (n_TE - sum s_i^2/(s_i^2+mu^2))^2``;
   * ``lcurve``: corner of maximum Menger curvature of ``(log ||A x_mu - b||^2, log ||x_mu||^2)``
     found by DECAES's golden-section corner search;

4. outputs are rescaled by ``decay_scale``.

The non-negative least-squares problems of a chunk of voxels are solved together by one call of the
compiled batched Lawson-Hanson solver :func:`napari_myelin.reconst.nnls.batched_nnls` (float64, normal
equations, warm-started from the previous solve of the same voxel); the scalar searches around it
(angle surrogate, bracketing, Brent) advance all voxels of a chunk in lock step as array operations.
Voxels with NaN/Inf echoes or no positive signal are skipped (NaN outputs) and counted in
``parameters["n_skipped"]``.

References
----------
Whittall K.P., MacKay A.L., "Quantitative interpretation of NMR relaxation data", J Magn Reson 84 (1989).
Prasloski T. et al., "Applications of stimulated echo correction to multicomponent T2 analysis",
Magn Reson Med 67 (2012).
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
Lawson C.L., Hanson R.J., Solving Least Squares Problems, SIAM (1995), ch. 23.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from napari_myelin.reconst.epg import _signed_curve_and_derivative, epg_decay_curve, epg_decay_curve_and_derivative
from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.reconst.nnls import batched_nnls, residual_norms
from napari_myelin.utils.progress import step

__all__ = [
    "fit_t2_distribution",
    "t2_parts",
    "batched_nnls",
    "predict_decay",
    "myelin_water",
    "to_percent",
    "automatic_mask",
    "REGULARIZATIONS",
]

REGULARIZATIONS = ("none", "chi2", "mdp", "gcv", "lcurve")
_EPS = np.finfo(np.float64).eps


class _Problem:
    """Normalised decays ``b`` (B, m) with their bases ``A`` (B, m, n): Gram matrices computed once."""

    def __init__(self, A, b):
        self.A, self.b = A, b
        At = np.swapaxes(A, 1, 2)
        self.G = At @ A
        self.c = (At @ b[..., None])[..., 0]
        self.last = np.zeros(self.c.shape)

    def solve(self, rows, mu, warm=True):
        """NNLS at ``mu`` for ``rows``; returns (x, ||A x - b||^2) and remembers x for warm starts."""
        x = batched_nnls(self.G, self.c[rows], index=rows, mu=mu, init=self.last[rows] if warm else None)
        self.last[rows] = x
        return x, residual_norms(self.A, x, self.b[rows], index=rows)


# ---------------------------------------------------------------------------------------------
# Flip-angle optimisation (DECAES surrogate search over a discrete angle grid)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Basis tables
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Regularisation: vectorised scalar root finding (DECAES bracket + Brent) and lock-step drivers
# ---------------------------------------------------------------------------------------------


def _bracket_root(f, a, delta=1.0, dilate=1.5, maxiters=6):
    """Vectorised DECAES ``bracket_root_monotonic`` for increasing ``f`` from ``a`` (B,)."""
    B = a.size
    fa = f(a, np.ones(B, bool))
    done = ~np.isfinite(fa) | (fa == 0)
    lo, hi, flo, fhi = a.copy(), a.copy(), fa.copy(), fa.copy()
    sgn = np.sign(fa)
    b = a - sgn * delta
    act = ~done
    fb = np.full(B, np.nan)
    fb[act] = f(b[act], act)
    bad = act & (~np.isfinite(fb))
    zero = act & (fb == 0)
    # a non-finite fb: return (a, a); a zero fb: return (b, b)
    lo[zero], hi[zero], flo[zero], fhi[zero] = b[zero], b[zero], fb[zero], fb[zero]
    done |= bad | zero
    dlt = np.full(B, delta * dilate)
    cnt = 0
    act = ~done & (fa * fb > 0)
    while act.any() and cnt < maxiters:
        a = np.where(act, b, a)
        fa = np.where(act, fb, fa)
        b = np.where(act, a - sgn * dlt, b)
        fnew = np.full(B, np.nan)
        fnew[act] = f(b[act], act)
        fb = np.where(act, fnew, fb)
        bad = act & ~np.isfinite(fb)
        zero = act & (fb == 0)
        lo[bad], hi[bad], flo[bad], fhi[bad] = a[bad], a[bad], fa[bad], fa[bad]
        lo[zero], hi[zero], flo[zero], fhi[zero] = b[zero], b[zero], fb[zero], fb[zero]
        done |= bad | zero
        dlt = np.where(act, dlt * dilate, dlt)
        cnt += 1
        act = ~done & (fa * fb > 0)
    fin = ~done
    swap = a < b
    lo[fin] = np.where(swap, a, b)[fin]
    hi[fin] = np.where(swap, b, a)[fin]
    flo[fin] = np.where(swap, fa, fb)[fin]
    fhi[fin] = np.where(swap, fb, fa)[fin]
    return lo, hi, flo, fhi


def _brent_root(f, x0, x1, f0, f1, ftol, maxiters=100):
    """Vectorised DECAES ``brent_root`` (xatol = xrtol = 0) for bracketing rows; returns (x, fx)."""
    a, b, fa, fb = x0.copy(), x1.copy(), f0.copy(), f1.copy()
    sw = np.abs(fa) < np.abs(fb)
    a, b, fa, fb = np.where(sw, b, a), np.where(sw, a, b), np.where(sw, fb, fa), np.where(sw, fa, fb)
    c, d, fc = x0.copy(), x0.copy(), f0.copy()
    mflag = np.ones(a.size, bool)
    res_x, res_f = b.copy(), fb.copy()
    act = np.ones(a.size, bool)
    for _ in range(maxiters):
        stop = act & (np.abs(b - a) <= 0.0)
        res_x[stop], res_f[stop] = b[stop], fb[stop]
        act &= ~stop
        if not act.any():
            break
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = (a * fb * fc / (fa - fb) / (fa - fc) + b * fa * fc / (fb - fa) / (fb - fc)
                 + c * fa * fb / (fc - fa) / (fc - fb))
            sec = a - fa * (b - a) / (fb - fa)
        sec = np.where(fb - fa == 0, np.nan, sec)
        s = np.where(np.isfinite(s), s, sec)
        u, v = (3.0 * a + b) / 4.0, b
        u, v = np.minimum(u, v), np.maximum(u, v)
        with np.errstate(invalid="ignore"):
            cond = (~((u < s) & (s < v))) | (np.abs(s - b) >= np.abs(b - c) / 2.0) \
                | (mflag & (np.abs(b - c) <= 0.0)) | (~mflag & (np.abs(c - d) <= 0.0))
        s = np.where(cond, (a + b) / 2.0, s)
        mflag = np.where(act, cond, mflag)
        fs = np.full(a.size, np.nan)
        fs[act] = f(s[act], act)
        hit = act & ((fs == 0) | (np.abs(fs) <= ftol))
        res_x[hit], res_f[hit] = s[hit], fs[hit]
        nonfin = act & ~np.isfinite(fs)
        res_x[nonfin], res_f[nonfin] = b[nonfin], fb[nonfin]
        act &= ~(hit | nonfin)
        upd = act
        c_new, fc_new, d_new = b, fb, c
        tob = upd & (np.sign(fa) * np.sign(fs) < 0)
        toa = upd & ~tob
        c = np.where(upd, c_new, c)
        fc = np.where(upd, fc_new, fc)
        d = np.where(upd, d_new, d)
        b = np.where(tob, s, b)
        fb = np.where(tob, fs, fb)
        a = np.where(toa, s, a)
        fa = np.where(toa, fs, fa)
        sw = upd & (np.abs(fa) < np.abs(fb))
        a, b, fa, fb = np.where(sw, b, a), np.where(sw, a, b), np.where(sw, fb, fa), np.where(sw, fa, fb)
    res_x[act], res_f[act] = b[act], fb[act]
    return res_x, res_f


def _brent_minimize_gen(x1, x2, *, xrtol=0.0, xatol=1e-4, maxiters=20):
    """Generator form of DECAES ``brent_minimize`` (golden section + parabolic steps); yields abscissae."""
    alpha = 2.0 - (1.0 + 5**0.5) / 2.0
    x = x1 + alpha * (x2 - x1)
    y = yield x
    dx_old = dx = 0.0
    x_older = x_old = x
    y_older = y_old = y
    it = 0
    while it < maxiters:
        p = q = 0.0
        xm = (x2 + x1) / 2
        tol = xatol + xrtol * abs(x)
        if abs(x - xm) + (x2 - x1) / 2 <= 2 * tol:
            break
        it += 1
        if abs(dx_old) > tol:
            r = (x - x_old) * (y - y_older)
            q = (x - x_older) * (y - y_old)
            p = (x - x_older) * q - (x - x_old) * r
            q = 2 * (q - r)
            if q > 0:
                p = -p
            else:
                q = -q
        if abs(p) < abs(q * dx_old / 2) and p < q * (x2 - x) and p < q * (x - x1):
            dx_old = dx
            dx = p / q
            xt = x + dx
            if (xt - x1) < 2 * tol or (x2 - xt) < 2 * tol:
                dx = tol if x < xm else -tol
        else:
            dx_old = (x2 - x) if x < xm else (x1 - x)
            dx = alpha * dx_old
        x_new = x + dx if abs(dx) >= tol else x + (tol if dx > 0 else -tol)
        y_new = yield x_new
        if y_new < y:
            if x_new < x:
                x2 = x
            else:
                x1 = x
            x_older, x_old, x = x_old, x, x_new
            y_older, y_old, y = y_old, y, y_new
        else:
            if x_new < x:
                x1 = x_new
            else:
                x2 = x_new
            if y_new <= y_old or x_old == x:
                x_older, x_old = x_old, x_new
                y_older, y_old = y_old, y_new
            elif y_new <= y_older or x_older == x or x_older == x_old:
                x_older = x_new
                y_older = y_new
    return x


def _gcv_gen(m, n, s):
    """GCV (Hansen 1992, eq. 32): minimise log(max(RSS / dof^2, eps^2/m)) over log mu in [-8, 2].

    ``dof = max(m - n, 0) + sum_i mu^2 / (s_i^2 + mu^2)``; receives (rss, ||x||^2) per request.
    """
    gen = _brent_minimize_gen(-8.0, 2.0, xrtol=0.0, xatol=1e-4, maxiters=20)
    low = _EPS**2 / m
    logmu = next(gen)
    try:
        while True:
            rss, _ = yield logmu
            mu2 = math.exp(logmu) ** 2
            dof = max(m - n, 0) + float(np.sum(mu2 / (s**2 + mu2)))
            logmu = gen.send(math.log(max(rss / dof**2, low)))
    except StopIteration as stop:
        return math.exp(stop.value)


def _lcurve_gen():
    """DECAES L-curve corner search (golden-section on the Menger curvature with backtracking)."""
    phi = (1 + 5**0.5) / 2.0
    xtol = ptol = ctol = 1e-4
    cache: dict[float, list] = {}
    states: list = []

    def menger(pj, pk, pl):
        djk, dkl, dlj = pj - pk, pk - pl, pl - pj
        den = math.sqrt(max(float(djk @ djk) * float(dkl @ dkl) * float(dlj @ dlj), 0.0))
        if den == 0.0:
            return -math.inf
        return 2.0 * float(djk[0] * dkl[1] - djk[1] * dkl[0]) / den

    def getP(x):
        if x not in cache:
            rss, xx = yield x
            cache[x] = [np.array([math.log(rss), math.log(xx)]), -math.inf]
        return cache[x][0]

    def update(xvec, ptl, pbr):
        for x in xvec:
            yield from getP(x)
        xs = sorted(cache)
        for x in xvec:
            P = cache[x][0]
            C = -math.inf
            if min(float(np.linalg.norm(P - ptl)), float(np.linalg.norm(P - pbr))) > ctol:
                xm_ = max((t for t in xs if t < x), default=None)
                xp_ = min((t for t in xs if t > x), default=None)
                if xm_ is not None and xp_ is not None:
                    C = menger(cache[xm_][0], P, cache[xp_][0])
            cache[x][1] = C

    x1, x4 = -8.0, 2.0
    x2 = (phi * x1 + x4) / (phi + 1.0)
    x3 = x1 + (x4 - x2)
    xvec = (x1, x2, x3, x4)
    pvec = []
    for x in xvec:
        pvec.append((yield from getP(x)))
    pvec = tuple(pvec)
    ptl, pbr = pvec[0], pvec[3]
    yield from update(xvec, ptl, pbr)
    it = 0
    while abs(xvec[3] - xvec[0]) >= xtol and float(np.linalg.norm(pvec[0] - pvec[3])) >= ptol:
        it += 1
        if cache and states:
            best_x = max(cache.items(), key=lambda kv: kv[1][1])[0]
            best_diam = abs(xvec[3] - xvec[0])
            for sx, sp in states:
                if (sx[1] == best_x or sx[2] == best_x) and abs(sx[3] - sx[0]) <= best_diam:
                    xvec, pvec = sx, sp
                    best_diam = abs(sx[3] - sx[0])
        c2 = cache.get(xvec[1], (None, -math.inf))[1]
        c3 = cache.get(xvec[2], (None, -math.inf))[1]
        if c2 > c3:
            a1, a2, a3, _ = xvec
            xn = (a1, (phi * a1 + a3) / (phi + 1.0), a2, a3)
            pvec = (pvec[0], (yield from getP(xn[1])), pvec[1], pvec[2])
        else:
            _, a2, a3, a4 = xvec
            xn = (a2, a3, a2 + (a4 - a3), a4)
            pvec = (pvec[1], pvec[2], (yield from getP(xn[2])), pvec[3])
        xvec = xn
        yield from update(xvec, ptl, pbr)
        states.append((xvec, pvec))
        if it > 200:
            break
    best_x = max(cache.items(), key=lambda kv: kv[1][1])[0]
    return math.exp(best_x)


def _drive(gens, prob):
    """Run per-voxel scalar searches in lock step; each step's NNLS problems are solved as one batch."""
    B = len(gens)
    mus = np.full(B, np.nan)
    req = np.full(B, np.nan)
    for i, g in enumerate(gens):
        try:
            req[i] = next(g)
        except StopIteration as stop:
            mus[i] = stop.value
    act = np.isnan(mus)
    while act.any():
        r = np.nonzero(act)[0]
        x, rss = prob.solve(r, np.exp(req[r]))
        xx = np.einsum("bn,bn->b", x, x)
        for k, i in enumerate(r):
            try:
                req[i] = gens[i].send((float(rss[k]), float(xx[k])))
            except StopIteration as stop:
                mus[i] = stop.value
                act[i] = False
    return mus


def _choose_mu(reg, prob, res0, *, chi2_factor, sigma):
    """Regularisation parameter per voxel (B,) for normalised decays (chi2 or mdp)."""
    A, b = prob.A, prob.b
    B, m, _ = A.shape
    if reg == "none":
        return np.zeros(B)

    if reg == "chi2":
        target = chi2_factor * res0

        def F(logmu, rows):
            _, rss = prob.solve(rows, np.exp(logmu))
            return (rss - target[rows]) / target[rows]

        ftol = np.full(B, 1e-3 * (chi2_factor - 1.0))
    else:  # mdp
        delta = np.sqrt(m) * sigma
        target = delta**2

        def F(logmu, rows):
            _, rss = prob.solve(rows, np.exp(logmu))
            return rss - target[rows]

        ftol = 1e-3 * target

    # bracketing operates on all rows; Brent on the bracketing subset (indices passed explicitly)
    lo, hi, flo, fhi = _bracket_root(lambda x, act: F(x, np.nonzero(act)[0]), np.full(B, -4.0))
    brk = flo * fhi < 0
    logmu = np.where(np.abs(flo) < np.abs(fhi), lo, hi)
    err = np.zeros(B)
    if brk.any():
        r = np.nonzero(brk)[0]
        xs, fs = _brent_root(lambda x, act: F(x, r[act]), lo[r], hi[r], flo[r], fhi[r], ftol[r])
        logmu[r], err[r] = xs, fs
    mu = np.exp(logmu)
    if reg == "mdp":
        mu = np.where(brk & ~np.isfinite(err), 0.0, mu)
        mu = np.where(delta <= np.sqrt(res0), 0.0, mu)
        mu = np.where(delta**2 >= np.einsum("bm,bm->b", b, b), np.inf, mu)
    return mu


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def _single_threaded_blas():
    """BLAS limited to one thread while fitting: the many small products are faster that way (library
    threads would oversubscribe the cores); chunks run in parallel Python threads instead."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _run_chunks(fit_chunk, starts, n_workers, n_fit, progress, cancel):
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


def _check_inputs(signal, echo_times, n_t2, t2_range, reg, chi2_factor, noise_level):
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
    n_te = te.size
    spatial = sig.shape[:-1]
    flat = sig.reshape(-1, n_te)
    nvox = flat.shape[0]

    sel = np.ones(nvox, dtype=bool)
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != spatial:
            raise InputError(f"mask: shape {m.shape} does not match the image grid {spatial}; use a mask on the same grid.")
        sel &= m.reshape(-1)
    finite = np.all(np.isfinite(flat), axis=1)
    maxsig = np.max(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
    good = finite & (maxsig > 0) & (flat[:, 0] > 0)
    n_skipped = int(np.count_nonzero(sel & ~good))
    sel &= good

    t2_times = np.logspace(math.log10(t2_range[0]), math.log10(t2_range[1]), int(n_t2))
    log_t2 = np.log(t2_times)

    fixed_scalar = None
    alpha_map = None
    if flip_angle is not None:
        fa = np.asarray(flip_angle, dtype=np.float64)
        if fa.ndim == 0:
            fixed_scalar = float(fa)
            if not (0 < fixed_scalar <= 360):
                raise InputError(f"flip_angle: {fixed_scalar} deg is not a valid refocusing angle; use e.g. 180.")
        else:
            if fa.shape != spatial:
                raise InputError(
                    f"flip_angle: map shape {fa.shape} does not match the image grid {spatial}; resample it first."
                )
            alpha_map = fa.reshape(-1)
            bad_fa = sel & ~(np.isfinite(alpha_map) & (alpha_map > 0))
            n_skipped += int(np.count_nonzero(bad_fa))
            sel &= ~bad_fa

    # bases
    table = None
    Ag = dAg = None
    if fixed_scalar is not None:
        A_fixed = np.swapaxes(epg_decay_curve(n_te, spacing, t2_times[None, :], t1, fixed_scalar, refocusing_control_angle)[0], 0, 1)
    else:
        lo_a = float(min_ref_angle)
        hi_a = 180.0
        if alpha_map is not None and sel.any():
            lo_a = min(lo_a, float(alpha_map[sel].min()))
            hi_a = max(hi_a, float(alpha_map[sel].max()))
        t2_key = tuple(float(v) for v in t2_times)
        table = _basis_table(n_te, spacing, t2_key, float(t1), float(refocusing_control_angle), lo_a, hi_a)
        if alpha_map is None:
            grid, Ag, dAg = _grid_bases(n_te, spacing, t2_key, float(t1), float(refocusing_control_angle),
                                        float(min_ref_angle), int(n_ref_angles))

    out = {
        "distribution": np.full((nvox, int(n_t2)), np.nan),
        "alpha": np.full(nvox, np.nan),
        "mu": np.full(nvox, np.nan),
        "chi2_factor": np.full(nvox, np.nan),
        "resnorm": np.full(nvox, np.nan),
        "snr": np.full(nvox, np.nan),
        "fnr": np.full(nvox, np.nan),
        "gdn": np.full(nvox, np.nan),
        "gmt2": np.full(nvox, np.nan),
        "gva": np.full(nvox, np.nan),
    }
    idx_all = np.nonzero(sel)[0]
    n_fit = idx_all.size
    step(progress, cancel, 0.0, f"Fitting T2 distributions of {n_fit} voxels ({n_skipped} skipped)")
    chunk_size = max(int(chunk_size), 1)

    def fit_chunk(start):
        ids = idx_all[start:start + chunk_size]
        y = flat[ids]
        scale = y.max(axis=1)
        b = y / scale[:, None]
        B = ids.size
        support = None
        if fixed_scalar is not None:
            alpha = np.full(B, fixed_scalar)
            A = np.broadcast_to(A_fixed, (B,) + A_fixed.shape)
        elif alpha_map is not None:
            alpha = alpha_map[ids]
            A = table(alpha)
        else:
            alpha, support = _optimise_alpha(b, grid, Ag, dAg, min(5, int(n_ref_angles)))
            A = table(alpha)
        prob = _Problem(np.ascontiguousarray(A), b)
        allr = np.arange(B)
        if support is not None:
            prob.last[:] = support
        x0, res0 = prob.solve(allr, None, warm=support is not None)
        if reg == "none":
            mu = np.zeros(B)
            x = x0
        elif reg in ("chi2", "mdp"):
            sigma = None if noise_level is None else float(noise_level) / scale
            mu = _choose_mu(reg, prob, res0, chi2_factor=chi2_factor, sigma=sigma)
            x = np.zeros_like(x0)
            fin = np.nonzero(np.isfinite(mu))[0]
            if fin.size:
                x[fin] = prob.solve(fin, mu[fin])[0]
        else:
            if reg == "gcv":
                s = np.linalg.svd(A, compute_uv=False)
                gens = [_gcv_gen(n_te, int(n_t2), s[k]) for k in range(B)]
            else:
                gens = [_lcurve_gen() for _ in range(B)]
            mu = _drive(gens, prob)
            x = prob.solve(allr, mu)[0]
        dist = x * scale[:, None]
        fit = np.einsum("bmn,bn->bm", A, dist)
        resid = fit - y
        r2 = np.einsum("bm,bm->b", resid, resid)
        # residual of the normalised decay b = y / scale relative to the unregularised fit's
        chi2f = np.ones(B) if reg == "none" else (r2 / scale**2) / np.maximum(res0, _EPS)
        ssum = dist.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ggm = dist @ log_t2 / ssum
            gva = np.expm1(np.einsum("bn,bn->b", (log_t2[None] - log_ggm[:, None]) ** 2, dist) / ssum)
            out["fnr"][ids] = ssum / np.sqrt(r2 / (n_te - 1))
            out["snr"][ids] = scale / np.std(resid, axis=1, ddof=1)
        out["distribution"][ids] = dist
        out["alpha"][ids] = alpha
        out["mu"][ids] = mu
        out["chi2_factor"][ids] = chi2f
        out["resnorm"][ids] = np.sqrt(r2)
        out["gdn"][ids] = ssum
        out["gmt2"][ids] = np.exp(log_ggm)
        out["gva"][ids] = gva
        return B

    starts = list(range(0, n_fit, chunk_size))
    n_workers = max(1, min(int(workers) if workers else min(2, os.cpu_count() or 1), len(starts) or 1))
    with _single_threaded_blas():
        _run_chunks(fit_chunk, starts, n_workers, n_fit, progress, cancel)

    arrays = {k: v.reshape(spatial + v.shape[1:]) for k, v in out.items()}
    arrays["fitted"] = sel.reshape(spatial)
    arrays["t2_times"] = t2_times
    arrays["echo_times"] = te
    units = {
        "distribution": "a.u.", "alpha": "deg", "mu": "1", "chi2_factor": "1", "resnorm": "a.u.", "snr": "1",
        "fnr": "1", "gdn": "a.u.", "gmt2": "s", "gva": "1", "fitted": "bool", "t2_times": "s", "echo_times": "s",
    }
    desc = {
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
    params = {
        "n_t2": int(n_t2), "t2_range": [float(t2_range[0]), float(t2_range[1])], "reg": reg,
        "chi2_factor": float(chi2_factor) if reg == "chi2" else None,
        "noise_level": None if noise_level is None else float(noise_level),
        "flip_angle": "optimised" if flip_angle is None else ("fixed" if fixed_scalar is None else fixed_scalar),
        "n_ref_angles": int(n_ref_angles), "min_ref_angle": float(min_ref_angle), "t1": float(t1),
        "refocusing_control_angle": float(refocusing_control_angle), "echo_spacing": spacing,
        "n_fitted": int(n_fit), "n_skipped": int(n_skipped),
    }
    return Maps(arrays, units, desc, method="DECAES-compatible multi-echo T2 NNLS (T2mapSEcorr)", parameters=params)


def _window_index(t2_times, window, name):
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


def predict_decay(distribution, alpha, echo_times, t2_times, *, t1=1.0, refocusing_control_angle=180.0):
    """Decay predicted by a T2 distribution at refocusing angle ``alpha`` (for plots of one voxel).

    Returns ``S_i = sum_j d_j EPG_i(T2_j, alpha)``, shape ``(..., n_TE)`` for ``distribution (..., n_T2)``
    and ``alpha (...)``.
    """
    te = np.asarray(echo_times, dtype=np.float64).ravel()
    t2 = np.asarray(t2_times, dtype=np.float64).ravel()
    alpha = np.asarray(alpha, dtype=np.float64)
    basis = epg_decay_curve(te.size, te[0], t2, t1, alpha[..., None], refocusing_control_angle)  # (..., nT2, nTE)
    return np.einsum("...j,...ji->...i", np.asarray(distribution, dtype=np.float64), basis)


def myelin_water(signal, echo_times, *, sp_window=(0.01, 0.04), mp_window=(0.04, 0.2), **fit_kwargs) -> Maps:
    """T2 distributions and their partition in one call (what the CLI, widget and pipeline run).

    Calls :func:`fit_t2_distribution` (``fit_kwargs`` are its keyword parameters; ``mask="auto"``
    uses :func:`automatic_mask`) then :func:`t2_parts`. Returns every map of both (``mwf``/``iewf`` as fractions); windows are
    validated before the (long) fit.
    """
    t2 = np.logspace(math.log10(fit_kwargs.get("t2_range", (0.01, 2.0))[0]),
                     math.log10(fit_kwargs.get("t2_range", (0.01, 2.0))[1]), 3)
    _window_index(t2, sp_window, "sp_window")
    _window_index(t2, mp_window, "mp_window")
    if isinstance(fit_kwargs.get("mask"), str):
        if fit_kwargs["mask"] != "auto":
            raise InputError(f"mask: '{fit_kwargs['mask']}' is not a mask; give an array, None or 'auto'.")
        fit_kwargs["mask"] = automatic_mask(signal)
    fit = fit_t2_distribution(signal, echo_times, **fit_kwargs)
    parts = t2_parts(fit, sp_window=sp_window, mp_window=mp_window)
    arrays = dict(parts.arrays)
    arrays.update({k: v for k, v in fit.arrays.items() if k != "gmt2"})
    arrays["gmt2"] = fit["gmt2"]
    units = dict(fit.units, **parts.units)
    desc = dict(fit.descriptions, **parts.descriptions)
    return Maps(arrays, units, desc, method=fit.method + " + T2partSEcorr", parameters=parts.parameters)


def to_percent(maps: Maps, names=("mwf", "iewf")) -> Maps:
    """A copy of ``maps`` with the given fraction maps in percent (units ``"%"``), as layers and files show them."""
    arrays = dict(maps.arrays)
    units = dict(maps.units)
    for n in names:
        if n in arrays:
            arrays[n] = 100.0 * np.asarray(arrays[n])
            units[n] = "%"
    return Maps(arrays, units, dict(maps.descriptions), method=maps.method, parameters=dict(maps.parameters))


def automatic_mask(signal) -> np.ndarray:
    """Brain mask of a multi-echo series: median-Otsu on the echoes' root-sum-of-squares (see
    :func:`napari_myelin.reconst.masking.brain_mask`)."""
    from napari_myelin.reconst.masking import brain_mask

    sig = np.nan_to_num(np.asarray(signal, dtype=np.float64))
    if sig.ndim != 4:
        raise InputError("signal: an automatic brain mask needs a 4D multi-echo image; give a mask instead.")
    return brain_mask(sig)

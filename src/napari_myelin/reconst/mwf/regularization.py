"""Choice of the Tikhonov parameter ``mu`` and the regularised NNLS fit of a chunk of voxels.

The T2 distribution is ``x = argmin_{x>=0} ||A x - b||^2 + mu^2 ||x||^2`` with ``mu`` chosen by ``reg``:

* ``none``: ``mu = 0``;
* ``chi2``: ``||A x_mu - b||^2 = Chi2Factor ||A x_0 - b||^2`` (root in ``log mu`` by bracketing from
  ``log mu = -4`` then Brent, stopping when the relative misfit is below ``1e-3 (Chi2Factor - 1)``);
* ``mdp``: Morozov's discrepancy principle ``||A x_mu - b||^2 = n_TE sigma^2`` with
  ``sigma = noise_level / decay_scale``;
* ``gcv``: minimum over ``log mu in [-8, 2]`` of ``||A x_mu - b||^2 / (n_TE - sum s_i^2/(s_i^2+mu^2))^2``;
* ``lcurve``: corner of maximum Menger curvature of ``(log ||A x_mu - b||^2, log ||x_mu||^2)``
  found by DECAES's golden-section corner search.

The NNLS problems of a chunk are solved together (:func:`napari_myelin.reconst.nnls.batched_nnls`, warm-started
from the previous solve of the same voxel); the per-voxel searches advance in lock step.

References
----------
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
"""

from __future__ import annotations

import math

import numpy as np

from napari_myelin.reconst.mwf.search import _bracket_root, _brent_minimize_gen, _brent_root
from napari_myelin.reconst.nnls import batched_nnls, residual_norms

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


def _regularised_nnls(A, b, scale, support, *, reg, chi2_factor, noise_level):
    """T2 distributions of a chunk: NNLS of the normalised decays ``b`` (B, m) on the bases ``A`` (B, m, n)
    with ``mu`` chosen by ``reg``.

    ``scale`` (B,) are the decays' maxima (``sigma = noise_level / scale`` for ``mdp``); ``support`` (B, n),
    the flip-angle search's last solution or ``None``, warm-starts the unregularised solve. Returns the
    distributions ``x`` (B, n) of the normalised decays, ``mu`` (B,) and the unregularised residuals
    ``||A x_0 - b||^2`` (B,).
    """
    B, m, n = A.shape
    prob = _Problem(np.ascontiguousarray(A), b)
    allr = np.arange(B)
    if support is not None:
        prob.last[:] = support
    x0, res0 = prob.solve(allr, None, warm=support is not None)
    if reg == "none":
        return x0, np.zeros(B), res0
    if reg in ("chi2", "mdp"):
        sigma = None if noise_level is None else float(noise_level) / scale
        mu = _choose_mu(reg, prob, res0, chi2_factor=chi2_factor, sigma=sigma)
        x = np.zeros_like(x0)
        fin = np.nonzero(np.isfinite(mu))[0]
        if fin.size:
            x[fin] = prob.solve(fin, mu[fin])[0]
        return x, mu, res0
    if reg == "gcv":
        s = np.linalg.svd(A, compute_uv=False)
        gens = [_gcv_gen(m, n, s[k]) for k in range(B)]
    else:
        gens = [_lcurve_gen() for _ in range(B)]
    mu = _drive(gens, prob)
    return prob.solve(allr, mu)[0], mu, res0

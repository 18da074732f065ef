"""Batched non-negative least squares (Lawson-Hanson on the normal equations), compiled with numba.

Solves, for every row ``i`` of a batch,

.. math::

    x_i = \\arg\\min_{x \\ge 0} \\lVert A_i x - b_i \\rVert^2 + \\mu_i^2 \\lVert x \\rVert^2

given the Gram matrices ``G = A^T A`` (a table shared by the rows through an index, e.g. one matrix per
flip angle of a search grid) and ``c_i = A_i^T b_i``. The active-set method is that of Lawson & Hanson
(1995, ch. 23): the variable of largest positive dual ``w = c - (G + mu^2 I) x`` enters the passive set
``P``, the passive system ``(G[P, P] + mu^2 I) z = c[P]`` is solved by Cholesky, and where a passive
variable would turn negative the iterate steps back to feasibility and drops it. A variable entering with a
non-positive value (or whose passive system is not numerically positive definite) is refused and the next
candidate tried, as Lawson-Hanson (and DECAES) refuse a column whose Householder pivot is not positive.

The batch is fitted by one compiled call that loops over rows in machine code and releases the GIL, so
callers fit independent chunks in parallel threads. The minimiser is unique whatever the start, so a warm
start (``init``: e.g. the solution at a nearby ``mu`` or flip angle) changes only the iteration count.

References
----------
Lawson C.L., Hanson R.J., Solving Least Squares Problems, SIAM (1995), ch. 23.
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["batched_nnls", "residual_norms"]


@njit(nogil=True, cache=True)
def _spd_solve(M, rhs, k):
    """Solve ``M[:k, :k] z = rhs[:k]`` in place by Cholesky (``M`` overwritten by its factor, ``rhs`` by ``z``).

    Returns False, leaving ``rhs`` undefined, when a pivot is not positive (not numerically positive
    definite, as LAPACK ``potrf`` reports).
    """
    for j in range(k):
        d = M[j, j]
        for p in range(j):
            d -= M[j, p] * M[j, p]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        M[j, j] = d
        for i in range(j + 1, k):
            s = M[i, j]
            for p in range(j):
                s -= M[i, p] * M[j, p]
            M[i, j] = s / d
    for i in range(k):  # L y = rhs
        s = rhs[i]
        for p in range(i):
            s -= M[i, p] * rhs[p]
        rhs[i] = s / M[i, i]
    for i in range(k - 1, -1, -1):  # L^T z = y
        s = rhs[i]
        for p in range(i + 1, k):
            s -= M[p, i] * rhs[p]
        rhs[i] = s / M[i, i]
    return True


@njit(nogil=True, cache=True)
def _nnls_row(G, c, mu2, x, warm, thresh, max_steps, P, rejected, M, z, idx):
    """Lawson-Hanson for one row; ``x`` (n,) holds the start (if ``warm``) and receives the solution.

    ``P``, ``rejected`` (bool), ``M`` (n, n), ``z``, ``idx`` (n,) are work arrays.
    """
    n = c.size
    need_add = True
    for j in range(n):
        rejected[j] = False
        if warm and x[j] > 0.0:
            P[j] = True
            need_add = False
        else:
            P[j] = False
            x[j] = 0.0
    for _ in range(max_steps):
        k = 0  # passive indices in increasing order
        for j in range(n):
            if P[j]:
                idx[k] = j
                k += 1
        entered = -1
        if need_add:
            best = -np.inf
            for j in range(n):
                if P[j] or rejected[j]:
                    continue
                w = c[j]  # x[j] = 0 outside P: the mu^2 x term vanishes
                for a in range(k):
                    w -= G[j, idx[a]] * x[idx[a]]
                if w > thresh and w > best:
                    best = w
                    entered = j
            if entered < 0:
                return
            P[entered] = True
            a = k  # insert into the sorted passive list
            while a > 0 and idx[a - 1] > entered:
                idx[a] = idx[a - 1]
                a -= 1
            idx[a] = entered
            k += 1
        for a in range(k):
            for b in range(a + 1):
                M[a, b] = G[idx[a], idx[b]]
            M[a, a] += mu2
            z[a] = c[idx[a]]
        if not _spd_solve(M, z, k):
            for a in range(k):
                z[a] = 0.0
        if entered >= 0:
            pos = 0
            while idx[pos] != entered:
                pos += 1
            if z[pos] <= 0.0:  # refuse the entering variable, try the next candidate
                P[entered] = False
                rejected[entered] = True
                need_add = True
                continue
        feasible = True
        for a in range(k):
            if z[a] <= 0.0:
                feasible = False
                break
        if feasible:
            for a in range(k):
                x[idx[a]] = z[a]
            need_add = True
        else:
            # step from x towards z until the first passive variable reaches zero, and drop it
            t_min = np.inf
            a_min = -1
            for a in range(k):
                if z[a] <= 0.0:
                    xa = x[idx[a]]
                    t = xa / (xa - z[a])
                    if t < t_min:
                        t_min = t
                        a_min = a
            step = t_min if math.isfinite(t_min) else 0.0
            for a in range(k):
                j = idx[a]
                x[j] += step * (z[a] - x[j])
                if x[j] <= 0.0 or a == a_min:
                    x[j] = 0.0
                    P[j] = False
            need_add = False
        for j in range(n):
            rejected[j] = False


@njit(nogil=True, cache=True)
def _nnls_rows(G, gi, c, mu2, x, warm, tol, max_steps):
    B, n = c.shape
    P = np.zeros(n, dtype=np.bool_)
    rejected = np.zeros(n, dtype=np.bool_)
    M = np.empty((n, n))
    z = np.empty(n)
    idx = np.empty(n, dtype=np.intp)
    for r in range(B):
        cmax = 0.0
        for j in range(n):
            cmax = max(cmax, abs(c[r, j]))
        thresh = tol * max(cmax, 1e-300)
        _nnls_row(G[gi[r]], c[r], mu2[r], x[r], warm, thresh, max_steps, P, rejected, M, z, idx)


@njit(nogil=True, cache=True)
def _residual_norms(A, ai, x, b, out):
    B, m = b.shape
    n = x.shape[1]
    nz = np.empty(n, dtype=np.intp)
    for r in range(B):
        Ar = A[ai[r]]
        k = 0  # the support of x (a few entries)
        for j in range(n):
            if x[r, j] != 0.0:
                nz[k] = j
                k += 1
        s = 0.0
        for i in range(m):
            v = -b[r, i]
            for a in range(k):
                v += Ar[i, nz[a]] * x[r, nz[a]]
            s += v * v
        out[r] = s


def _rows_index(index, B, K):
    if index is None:
        if K != B:
            raise ValueError(f"{K} matrices for {B} rows: pass index= to say which matrix each row uses")
        return np.arange(B, dtype=np.intp)
    gi = np.ascontiguousarray(index, dtype=np.intp)
    if gi.shape != (B,) or (B and (gi.min() < 0 or gi.max() >= K)):
        raise ValueError(f"index must be {B} integers in [0, {K})")
    return gi


def batched_nnls(G, c, *, index=None, mu=None, init=None, max_iter=None, tol=1e-13):
    """Non-negative (Tikhonov-regularised) least squares for a batch of problems: Lawson-Hanson.

    Solves ``min_{x >= 0} ||A x - b||^2 + mu^2 ||x||^2`` for every row from the normal equations
    ``G = A^T A``, ``c = A^T b`` (see the module docstring for the method).

    Parameters
    ----------
    G : ndarray, shape (K, n, n)
        Gram matrices ``A^T A``; row ``i`` uses ``G[index[i]]``.
    c : ndarray, shape (B, n)
        ``A^T b`` per row.
    index : ndarray of int, shape (B,), optional
        Which Gram matrix each row uses (default ``arange(B)``, which needs ``K == B``).
    mu : float or ndarray, shape (B,), optional
        Tikhonov parameters (default 0).
    init : ndarray, shape (B, n), optional
        A start (clipped at 0); its support is the first passive set (warm start).
    max_iter : int, optional
        Lawson-Hanson iteration count ``3 n`` by default; at most ``6 max_iter`` passive solves per row.
    tol : float
        Relative dual tolerance: a variable enters when ``w_j > tol * max(|c|)``.

    Returns
    -------
    x : ndarray, shape (B, n)
    """
    G = np.ascontiguousarray(G, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    B, n = c.shape
    gi = _rows_index(index, B, G.shape[0])
    mu2 = np.zeros(B) if mu is None else np.ascontiguousarray(np.broadcast_to(np.asarray(mu, dtype=np.float64) ** 2, (B,)))
    warm = init is not None
    x = np.array(init, dtype=np.float64, order="C") if warm else np.zeros((B, n))
    max_iter = 3 * n if max_iter is None else int(max_iter)
    _nnls_rows(G, gi, c, mu2, x, warm, float(tol), 6 * max_iter)
    return x


def residual_norms(A, x, b, *, index=None):
    """Squared residuals ``||A[index[i]] x_i - b_i||^2`` per row.

    Parameters
    ----------
    A : ndarray, shape (K, m, n)
    x : ndarray, shape (B, n)
    b : ndarray, shape (B, m)
    index : ndarray of int, shape (B,), optional
        Which matrix each row uses (default ``arange(B)``).

    Returns
    -------
    ndarray, shape (B,)
    """
    A = np.ascontiguousarray(A, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    out = np.empty(b.shape[0])
    _residual_norms(A, _rows_index(index, b.shape[0], A.shape[0]), x, b, out)
    return out

"""Vectorised scalar searches of the regularisation: DECAES's root bracketing, Brent root and Brent minimum.

:func:`_bracket_root` and :func:`_brent_root` advance a root search of every voxel of a chunk in lock step
as array operations (``f(x[active], active)`` evaluates the still active rows once per iteration);
:func:`_brent_minimize_gen` is a per-voxel generator (it yields abscissae and receives function values)
that :func:`napari_myelin.reconst.mwf.regularization._drive` runs in lock step.

References
----------
Doucette J., Kames C., Rauscher A., "DECAES - DEcomposition and Component Analysis of Exponential
Signals", Z Med Phys 30 (2020). https://github.com/jondeuce/DECAES.jl (MIT).
"""

from __future__ import annotations

import numpy as np


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

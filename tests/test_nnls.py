"""Batched Lawson-Hanson NNLS (reconst.nnls) against scipy.optimize.nnls and numpy's dense solves."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import nnls as scipy_nnls

from napari_myelin.reconst import nnls
from napari_myelin.reconst.epg import epg_decay_curve


# ----------------------------------------------------------------------------------------------
# Compiled batched NNLS against scipy (reference implementation)
# ----------------------------------------------------------------------------------------------


def test_batched_nnls_matches_scipy():
    rng = np.random.default_rng(0)
    t2 = np.logspace(-2, math.log10(2.0), 40)
    B = 60
    A = np.swapaxes(epg_decay_curve(48, 0.01, t2[None, :], 1.0, rng.uniform(120, 180, B)[:, None]), 1, 2)
    x_true = np.zeros((B, 40))
    x_true[:, 8] = rng.uniform(0.05, 0.3, B)
    x_true[:, 20] = 1.0
    b = np.einsum("bmn,bn->bm", A, x_true) + rng.normal(0, 5e-3, (B, 48))
    mu = rng.uniform(0.0, 0.05, B)
    mu[:10] = 0.0
    G = np.swapaxes(A, 1, 2) @ A
    c = np.einsum("bmn,bm->bn", A, b)
    x = nnls.batched_nnls(G, c, mu=mu)
    for i in range(B):
        Aa = np.vstack([A[i], mu[i] * np.eye(40)])
        ba = np.concatenate([b[i], np.zeros(40)])
        ref, _ = scipy_nnls(Aa, ba, maxiter=2000)
        cost = lambda v: np.sum((A[i] @ v - b[i]) ** 2) + mu[i] ** 2 * np.sum(v**2)  # noqa: E731
        assert cost(x[i]) <= cost(ref) * (1 + 1e-9) + 1e-15
        if mu[i] > 0:  # strictly convex: unique minimiser
            np.testing.assert_allclose(x[i], ref, atol=1e-6)
    assert np.all(x >= 0)


def test_spd_solve_matches_dense_solve_and_refuses_non_positive_definite_systems():
    # the passive systems of Lawson-Hanson: Cholesky solves equal numpy's dense solve; a singular
    # (rank-1 minus a little) system is reported as not positive definite (its entering variable is refused)
    rng = np.random.default_rng(6)
    for k in (1, 2, 7, 16):
        M = rng.normal(size=(k + 5, k))
        G = M.T @ M + 0.1 * np.eye(k)
        rhs = rng.normal(size=k)
        work, z = np.zeros((20, 20)), np.zeros(20)
        work[:k, :k], z[:k] = G, rhs
        assert nnls._spd_solve(work, z, k)
        np.testing.assert_allclose(z[:k], np.linalg.solve(G, rhs), rtol=1e-10)
    v = rng.normal(size=4)
    assert not nnls._spd_solve(np.outer(v, v) - 1e-3 * np.eye(4), rng.normal(size=4), 4)


def test_residual_norms_match_numpy():
    rng = np.random.default_rng(8)
    A = rng.normal(size=(3, 12, 5))
    x = np.abs(rng.normal(size=(7, 5))) * (rng.uniform(size=(7, 5)) < 0.5)
    b = rng.normal(size=(7, 12))
    idx = rng.integers(0, 3, 7)
    ref = np.sum((np.einsum("bmn,bn->bm", A[idx], x) - b) ** 2, axis=1)
    np.testing.assert_allclose(nnls.residual_norms(A, x, b, index=idx), ref, rtol=1e-12)


def test_batched_nnls_one_shared_gram_matches_scipy():
    # every row on one Gram matrix (one angle of the flip-angle grid): the dual uses one GEMM
    rng = np.random.default_rng(7)
    t2 = np.logspace(-2, math.log10(2.0), 40)
    A = np.swapaxes(epg_decay_curve(32, 0.01, t2[None, :], 1.0, np.array([[150.0]])), 1, 2)[0]
    x_true = np.abs(rng.normal(size=(25, 40))) * (rng.uniform(size=(25, 40)) < 0.1)
    b = x_true @ A.T + rng.normal(0, 1e-3, (25, 32))
    x = nnls.batched_nnls((A.T @ A)[None], b @ A, index=np.zeros(25, dtype=int))
    ref = np.array([scipy_nnls(A, bb, maxiter=2000)[1] ** 2 for bb in b])
    rss = np.sum((x @ A.T - b) ** 2, axis=1)
    np.testing.assert_allclose(rss, ref, rtol=1e-8, atol=1e-18)


def test_batched_nnls_shared_gram_and_warm_start_match_scipy():
    # many rows sharing a few Gram matrices (the flip-angle grid), cold and warm started, noise-free
    # two-pool decays (ill-conditioned passive sets): residuals equal scipy's optimum
    rng = np.random.default_rng(3)
    t2 = np.logspace(-2, math.log10(2.0), 40)
    angles = np.array([120.0, 150.0, 175.0])
    A = np.swapaxes(epg_decay_curve(32, 0.01, t2[None, :], 1.0, angles[:, None]), 1, 2)  # (3, 32, 40)
    G = np.swapaxes(A, 1, 2) @ A
    B = 90
    idx = rng.integers(0, 3, B)
    f = rng.uniform(0.05, 0.3, B)
    alpha = rng.uniform(140, 170, B)
    b = (f[:, None] * epg_decay_curve(32, 0.01, 0.02, 1.0, alpha[:, None])[:, 0]
         + (1 - f[:, None]) * epg_decay_curve(32, 0.01, 0.08, 1.0, alpha[:, None])[:, 0])
    c = np.einsum("bmn,bm->bn", A[idx], b)
    ref = np.array([scipy_nnls(A[k], bb, maxiter=2000)[1] ** 2 for k, bb in zip(idx, b)])
    cold = nnls.batched_nnls(G, c, index=idx)
    warm = nnls.batched_nnls(G, c, index=idx, init=np.roll(cold, 1, axis=0))
    for x in (cold, warm):
        rss = np.sum((np.einsum("bmn,bn->bm", A[idx], x) - b) ** 2, axis=1)
        np.testing.assert_allclose(rss, ref, rtol=1e-8, atol=1e-18)

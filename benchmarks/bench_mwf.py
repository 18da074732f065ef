"""Benchmark: batched DECAES-exact MWF fit vs a per-voxel scipy.optimize.nnls implementation of the same algorithm.

Both fit the same synthetic two-pool voxels (48 echoes, TE 10 ms, nT2 40, T2 10 ms - 2 s, chi2 factor
1.02, flip angle optimised over 64 angles, SNR 200) and the script prints voxels per second of each,
the ratio, the agreement of their MWF and the peak memory of the batched fit.

Usage::

    python benchmarks/bench_mwf.py [N_PROJECT] [N_PEER]
"""

from __future__ import annotations

import inspect
import math
import resource
import sys
import time
import tracemalloc

import numpy as np
from scipy.optimize import nnls

from napari_myelin.reconst import mwf
from napari_myelin.reconst.epg import epg_decay_curve, epg_decay_curve_and_derivative
from napari_myelin.reconst.mwf.flip_angle import _hermite_min, _init_points
from napari_myelin.reconst.mwf.search import _bracket_root, _brent_root

N_TE, TE, N_T2, T2_RANGE, CHI2 = 48, 0.01, 40, (0.01, 2.0), 1.02


def synthetic(n, seed=0, block=20000):
    """Two-pool decays (MWF 5-25 %, refocusing angle 140-180 deg, SNR 200), simulated in blocks so that
    the simulation's own memory stays small beside the fit's."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.25, n)
    alpha = rng.uniform(140.0, 180.0, n)
    sig = np.empty((n, N_TE))
    for s in range(0, n, block):
        fs, al = f[s:s + block, None], alpha[s:s + block, None]
        sig[s:s + block] = (fs * epg_decay_curve(N_TE, TE, 0.02, 1.0, al)[:, 0]
                            + (1 - fs) * epg_decay_curve(N_TE, TE, 0.08, 1.0, al)[:, 0])
    sig += rng.normal(0, 1 / 200, sig.shape)
    return 1000.0 * sig, f


# ---------------------------------------------------------------------------------------------
# Peer: the same algorithm, one voxel at a time, with scipy.optimize.nnls
# ---------------------------------------------------------------------------------------------


class PerVoxelPeer:
    """DECAES T2mapSEcorr (chi2) voxel by voxel: scipy NNLS (Tikhonov by augmentation), scalar searches."""

    def __init__(self, n_ref_angles=64, min_ref_angle=50.0):
        self.t2 = np.logspace(math.log10(T2_RANGE[0]), math.log10(T2_RANGE[1]), N_T2)
        self.grid = np.linspace(min_ref_angle, 180.0, n_ref_angles)
        a, d = epg_decay_curve_and_derivative(N_TE, TE, self.t2[None, :], 1.0, self.grid[:, None])
        self.A = np.swapaxes(a, 1, 2)
        self.dA = np.swapaxes(d, 1, 2)
        self.init = _init_points(n_ref_angles, min(5, n_ref_angles), n_ref_angles)

    @staticmethod
    def solve(A, b, mu=0.0):
        if mu > 0:
            A = np.vstack([A, mu * np.eye(A.shape[1])])
            b = np.concatenate([b, np.zeros(A.shape[1])])
        x, _ = nnls(A, b, maxiter=50 * A.shape[1])
        return x

    def loss(self, k, b):
        x = self.solve(self.A[k], b)
        r = self.A[k] @ x - b
        return r @ r, 2.0 * (self.dA[k] @ x) @ r

    def alpha(self, b):
        seen = {}
        for k in self.init:
            seen[k] = self.loss(k, b)

        def suggest():
            ks = sorted(seen)
            best_x, best_u = self.grid[ks[0]], seen[ks[0]][0]
            for k0, k1 in zip(ks[:-1], ks[1:]):
                x, u = _hermite_min(self.grid[k0], self.grid[k1], seen[k0][0], seen[k1][0], seen[k0][1], seen[k1][1])
                if u < best_u:
                    best_x, best_u = float(x), float(u)
            return best_x

        x = suggest()
        hi = int(np.clip(np.searchsorted(self.grid, x, side="right"), 1, self.grid.size - 1))
        for k in (hi - 1, hi):
            if k not in seen:
                seen[k] = self.loss(k, b)
        return suggest()

    def fit(self, y):
        scale = y.max()
        b = y / scale
        alpha = self.alpha(b)
        A = np.swapaxes(epg_decay_curve(N_TE, TE, self.t2, 1.0, alpha), 0, 1)
        x0 = self.solve(A, b)
        res0 = np.sum((A @ x0 - b) ** 2)
        target = CHI2 * res0

        def f(logmu, _act=None):
            x = self.solve(A, b, math.exp(float(logmu[0])))
            return np.array([(np.sum((A @ x - b) ** 2) - target) / target])

        lo, hi, flo, fhi = _bracket_root(f, np.array([-4.0]))
        logmu = lo if abs(flo[0]) < abs(fhi[0]) else hi
        if flo[0] * fhi[0] < 0:
            logmu, _ = _brent_root(f, lo, hi, flo, fhi, np.array([1e-3 * (CHI2 - 1.0)]))
        x = self.solve(A, b, math.exp(float(logmu[0])))
        dist = x * scale
        sp = (self.t2 >= 0.01) & (self.t2 <= 0.04)
        return dist[sp].sum() / dist.sum(), alpha


def main(n_project=20000, n_peer=300):
    sig, f = synthetic(max(n_project, n_peer))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mwf.fit_t2_distribution(sig[:8], TE * np.arange(1, N_TE + 1))  # build the cached EPG tables
    te = TE * np.arange(1, N_TE + 1)

    t, cpu = time.perf_counter(), time.process_time()
    res = mwf.myelin_water(sig[:n_project], te, n_t2=N_T2, t2_range=T2_RANGE, reg="chi2", chi2_factor=CHI2)
    t_project, cpu_project = time.perf_counter() - t, time.process_time() - cpu
    # memory in a separate run: tracemalloc slows numpy down, so it is not active while timing
    tracemalloc.start()
    mwf.myelin_water(sig[:n_project], te, n_t2=N_T2, t2_range=T2_RANGE, reg="chi2", chi2_factor=CHI2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    peer = PerVoxelPeer()
    t = time.perf_counter()
    peer_mwf = np.array([peer.fit(sig[i])[0] for i in range(n_peer)])
    t_peer = time.perf_counter() - t

    v_project, v_peer = n_project / t_project, n_peer / t_peer
    diff = np.abs(res["mwf"][:n_peer] - peer_mwf)
    print("napari-myelin MWF benchmark (48 echoes, nT2 40, chi2 1.02, flip-angle optimisation, SNR 200)")
    print(f"  project (batched, 2 threads):    {n_project:7d} voxels in {t_project:8.2f} s = {v_project:9.1f} voxels/s")
    print(f"  project CPU time:                {cpu_project:8.2f} s = {n_project / cpu_project:9.1f} voxels per CPU-second "
          f"(wall / CPU = {t_project / cpu_project:.2f}; on a shared machine the threads may not get both cores)")
    print(f"  peer (per-voxel scipy nnls):     {n_peer:7d} voxels in {t_peer:8.2f} s = {v_peer:9.1f} voxels/s")
    print(f"  ratio project / peer:            {v_project / v_peer:9.1f} x")
    print(f"  MWF agreement with the peer:     max |diff| = {diff.max():.2e} (fraction), "
          f"median {np.median(diff):.2e}")
    print(f"  MWF error vs truth (project):    mean {np.mean(res['mwf'][:n_project] - f[:n_project]) * 100:+.2f} points")
    chunk = inspect.signature(mwf.fit_t2_distribution).parameters["chunk_size"].default
    print(f"  peak traced memory ({n_project} voxels, chunk {chunk}): {peak / 2**20:.0f} MiB; "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB "
          f"({rss_before:.0f} MiB before fitting: interpreter, libraries, input signal)")
    io_per_voxel = 8 * (N_TE + N_T2 + 16)
    est = (peak - n_project * io_per_voxel) + 1_000_000 * io_per_voxel  # chunk working set is bounded
    print(f"  estimated peak for 1,000,000 voxels: {est / 2**30:.2f} GiB "
          f"(inputs+outputs {1_000_000 * io_per_voxel / 2**30:.2f} GiB + chunk working set)")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)

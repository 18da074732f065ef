"""Benchmark: napari-myelin QPM fits vs a per-voxel scipy.optimize.least_squares peer, in one run.

Both fit the same noisy SPGR voxels (3 flip angles, TR 15 ms, B1 known, SNR 200):
1. DESPOT1 T1/M0 (Ernst equation): project = batched linear DESPOT1 + Levenberg-Marquardt
   (:func:`napari_myelin.reconst.qpm.fit_vfa`); peer = ``least_squares`` per voxel started from the same
   linear estimate.
2. Two-pool myelin-water fraction (mcDESPOT SPGR branch, fixed pool parameters): project =
   batched variable-projection grid search (:func:`napari_myelin.reconst.qpm.myelin_map`); peer =
   ``least_squares`` per voxel on (M0, f_m), bounded, started at f_m = 0.1.

Prints the times, the voxels per second, the ratio and the agreement of the estimates.
Usage: ``python benchmarks/bench_qpm.py [n_voxels]`` (default 3000; the peer is the slow side).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy.optimize import least_squares

from napari_myelin.reconst import qpm


def main(n: int = 3000) -> None:
    rng = np.random.default_rng(0)
    fa, tr = np.array([3.0, 10.0, 20.0]), 0.015
    f = rng.uniform(0.03, 0.3, n)
    m0 = rng.uniform(0.6, 0.9, n)
    b1 = rng.uniform(0.85, 1.15, n)
    clean = qpm.spgr_two_pool_signal(m0, f, fa, tr, b1=b1)
    sd = clean.mean() / 200
    s = np.abs(clean + rng.normal(0, sd, clean.shape) + 1j * rng.normal(0, sd, clean.shape))
    mask = np.ones((1, n), bool)
    a = np.deg2rad(fa)

    # ---- DESPOT1
    t0 = time.perf_counter()
    ours = qpm.fit_vfa(s[None], fa, tr, b1=b1[None], mask=mask, csf_mask=mask)
    t_ours = time.perf_counter() - t0
    lin = qpm.fit_vfa(s[None], fa, tr, b1=b1[None], mask=mask, csf_mask=mask, nonlinear=False)
    t0 = time.perf_counter()
    peer_t1 = np.empty(n)
    for i in range(n):
        ai = b1[i] * a
        def res(p, ai=ai, si=s[i]):
            e1 = np.exp(-tr / p[1])
            return p[0] * np.sin(ai) * (1 - e1) / (1 - e1 * np.cos(ai)) - si
        x0 = [lin["m0"][0, i], np.clip(lin["t1"][0, i], 0.02, 9.9)]
        peer_t1[i] = least_squares(res, x0, bounds=([0, 0.01], [np.inf, 10.0]), method="trf").x[1]
    t_peer = time.perf_counter() - t0
    d_t1 = np.abs(ours["t1"][0] / peer_t1 - 1)
    print(f"DESPOT1 T1/M0, {n} voxels, 3 angles, SNR 200")
    print(f"  napari-myelin fit_vfa (batched LM)     {t_ours:8.3f} s  {n / t_ours:12.0f} voxels/s")
    print(f"  scipy least_squares per voxel (peer)   {t_peer:8.3f} s  {n / t_peer:12.0f} voxels/s")
    print(f"  speed-up {t_peer / t_ours:.0f}x; T1 agreement: median |rel diff| {np.median(d_t1):.1e}, "
          f"99th pct {np.percentile(d_t1, 99):.1e}")

    # ---- two-pool myelin water fraction
    t0 = time.perf_counter()
    my = qpm.myelin_map(s[None], fa, tr, b1=b1[None], mask=mask)["qpm_myelin"][0]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer_f = np.empty(n)
    for i in range(n):
        def res2(p, bi=b1[i], si=s[i]):
            return qpm.spgr_two_pool_signal(p[0], p[1], fa, tr, b1=bi) - si
        peer_f[i] = least_squares(res2, [s[i].max() * 10, 0.1], bounds=([0, 0], [np.inf, 0.4]), method="trf").x[1]
    t_peer = time.perf_counter() - t0
    print(f"two-pool myelin-water fraction (M0, f_m), {n} voxels")
    print(f"  napari-myelin myelin_map (grid + VP)   {t_ours:8.3f} s  {n / t_ours:12.0f} voxels/s")
    print(f"  scipy least_squares per voxel (peer)   {t_peer:8.3f} s  {n / t_peer:12.0f} voxels/s")
    print(f"  speed-up {t_peer / t_ours:.0f}x; f_m agreement: median |diff| {np.median(np.abs(my - peer_f)):.1e}, "
          f"99th pct {np.percentile(np.abs(my - peer_f), 99):.1e}; error vs truth: ours "
          f"{np.median(np.abs(my - f)):.4f}, peer {np.median(np.abs(peer_f - f)):.4f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)

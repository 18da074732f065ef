"""Benchmark: napari-myelin ``fit_mtsat`` (batched numpy) against a per-voxel numpy loop of the same equations.

Both compute MTsat, T1 and A from the same noisy MTw/PDw/T1w voxels (qMRLab's protocol: 6/6/20 deg,
TR 28/28/18 ms; SNR 100 on the PDw; B1 0.8-1.2 with the empirical correction 0.4):

1. Helms' small-angle closed forms (the default);
2. the exact SPGR equations (Newton steps on log R1 from the small-angle R1).

The peer loops over voxels in Python with numpy scalars (the way the equations read per voxel, as
qMRLab's ``MTSAT_exec`` and qmrust's ``mtsat`` are written); it runs on the first ``n_peer`` voxels.
Prints voxels per second of each, the ratio and the largest relative difference of the outputs.

Usage: ``python benchmarks/bench_mtsat.py [n_voxels] [n_peer]`` (defaults 1,000,000 and 20,000).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from napari_myelin.reconst.mtsat import fit_mtsat, mtsat_signal

FA = np.array([6.0, 6.0, 20.0])
TR = np.array([0.028, 0.028, 0.018])
F = 0.4


def _peer_voxel(s_mt, s_pd, s_t1, b, exact):
    """MTsat (p.u.), R1 (1/s) and A of one voxel, the equations of reconst/mtsat.py written out per voxel."""
    a_mt, a_pd, a_t1 = np.deg2rad(FA[0]), np.deg2rad(FA[1]) * b, np.deg2rad(FA[2]) * b
    r1 = 0.5 * (s_t1 * a_t1 / TR[2] - s_pd * a_pd / TR[1]) / (s_pd / a_pd - s_t1 / a_t1)
    amp = s_pd * s_t1 * (TR[1] * a_t1 / a_pd - TR[2] * a_pd / a_t1) / (s_t1 * TR[1] * a_t1 - s_pd * TR[2] * a_pd)
    if not exact:
        delta = (amp * a_mt / s_mt - 1.0) * r1 * TR[0] - 0.5 * a_mt ** 2
        return 100.0 * delta * (1 - F) / (1 - F * b), r1, amp
    target = np.log(s_pd / s_t1)
    x = np.log(r1)
    for _ in range(30):
        r = np.exp(x)
        parts = []
        for alpha, tr in ((a_pd, TR[1]), (a_t1, TR[2])):
            e1 = np.exp(-r * tr)
            c = np.cos(alpha)
            parts.append((np.log(np.sin(alpha)) + np.log1p(-e1) - np.log1p(-e1 * c),
                          r * tr * e1 * (1 - c) / ((1 - e1) * (1 - e1 * c))))
        dx = (parts[0][0] - parts[1][0] - target) / (parts[0][1] - parts[1][1])
        x = x - dx
        if abs(dx) <= 1e-13:  # the batched fit's stopping rule
            break
    r1 = np.exp(x)
    e_pd = np.exp(-r1 * TR[1])
    amp = s_pd * (1 - e_pd * np.cos(a_pd)) / (np.sin(a_pd) * (1 - e_pd))
    e_mt = np.exp(-r1 * TR[0])
    s = s_mt / (amp * np.sin(a_mt))
    delta = 1.0 - s / (1.0 - e_mt + s * np.cos(a_mt) * e_mt)
    return 100.0 * delta * (1 - F) / (1 - F * b), r1, amp


def main(n: int = 1_000_000, n_peer: int = 20_000) -> None:
    rng = np.random.default_rng(0)
    amp, t1 = rng.uniform(500, 2000, n), rng.uniform(0.6, 2.5, n)
    delta, b = rng.uniform(0.005, 0.04, n), rng.uniform(0.8, 1.2, n)
    clean = [mtsat_signal(amp, t1, delta if i == 0 else 0.0, FA[i], TR[i], b) for i in range(3)]
    sd = clean[1].mean() / 100.0
    sig = [np.abs(c + rng.normal(0, sd, n) + 1j * rng.normal(0, sd, n)) for c in clean]
    print(f"MTsat, {n} voxels (peer: first {n_peer}), 3 volumes, SNR 100, B1 0.8-1.2, empirical factor {F}")
    for exact in (False, True):
        t0 = time.perf_counter()
        ours = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=b, b1_correction=F, exact=exact,
                         mask=np.ones(n, bool))
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        peer = np.array([_peer_voxel(sig[0][i], sig[1][i], sig[2][i], b[i], exact) for i in range(n_peer)])
        t_peer = time.perf_counter() - t0
        ok = ours["t1"][:n_peer] > 0  # voxels the batched fit found valid (noise can leave none)
        d_sat = np.abs(ours["mtsat"][:n_peer][ok] / peer[ok, 0] - 1)
        d_t1 = np.abs(ours["t1"][:n_peer][ok] * peer[ok, 1] - 1)
        v_ours, v_peer = n / t_ours, n_peer / t_peer
        name = "exact" if exact else "small-angle"
        print(f"{name:12s} fit_mtsat (batched)      {t_ours:8.3f} s  {v_ours:14,.0f} voxels/s")
        print(f"{name:12s} per-voxel numpy (peer)   {t_peer:8.3f} s  {v_peer:14,.0f} voxels/s")
        print(f"{name:12s} ratio {v_ours / v_peer:,.0f}x; agreement on {int(ok.sum())} valid voxels: max |rel diff| "
              f"MTsat {d_sat.max():.1e}, T1 {d_t1.max():.1e}; invalid {ours.parameters['n_invalid']} of {n}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

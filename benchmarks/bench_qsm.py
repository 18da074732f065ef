"""Time each QSM step on a 256x256x128 head (1 mm) and compare against a naive peer.

Run: ``python benchmarks/bench_qsm.py [--size 256 256 128]``. The project's steps use scipy.fft real
transforms in single precision with all cores on the mask's bounding box + padding, with kernels
computed once per grid; the peer does the same dipole-inversion arithmetic with numpy.fft complex
double-precision transforms of the unpadded full volume (one thread), i.e. what a direct transcription
of the equations costs. Both are timed in the same run; the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from napari_myelin.core import qsm  # noqa: E402
from napari_myelin.core.dipole import dipole_kernel  # noqa: E402
from tests._qsm_phantom import make_head  # noqa: E402


def timed(label, fn, rows):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    rows.append((label, dt))
    print(f"{label:<40s} {dt:8.2f} s", flush=True)
    return out


def naive_tv_iteration(f, d_full, rho=2e-2, lam=2e-4):
    """One TV-ADMM iteration with numpy.fft complex128, full-size, no rfft: the peer."""
    e2 = sum((2 - 2 * np.cos(2 * np.pi * np.fft.fftfreq(n)))[tuple(slice(None) if i == a else None for i in range(3))]
             for a, n in enumerate(f.shape))
    denom = d_full**2 + rho * e2
    denom[0, 0, 0] = 1
    z = np.zeros((3,) + f.shape)
    u = np.zeros_like(z)
    dfs = np.fft.fftn(f) * d_full
    rhs = dfs + rho * np.fft.fftn(qsm._grad_t(z - u))
    chi = np.real(np.fft.ifftn(rhs / denom))
    v = qsm._grad(chi) + u
    z = np.sign(v) * np.maximum(np.abs(v) - lam / rho, 0)
    return chi, z


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 128))
    args = ap.parse_args(argv)
    shape = tuple(args.size)
    print(f"QSM benchmark on {shape} voxels (1 mm), {os.cpu_count()} CPU cores")
    h = make_head(shape=shape, voxel_mm=1.0, echo_times=(0.004, 0.010, 0.016, 0.022))
    rows = []
    ph = timed("phase scaling", lambda: qsm.phase_to_radians(h.phase), rows)
    mask = timed("brain mask (median_otsu)", lambda: qsm.brain_mask(h.magnitude), rows)
    uw = timed("Laplacian unwrapping (4 echoes)", lambda: qsm.laplacian_unwrap(ph, 1.0), rows)
    f_hz = timed("echo fit", lambda: qsm.echo_fit(qsm._align_echo_offsets(uw, h.echo_times, mask),
                                                   h.echo_times, h.magnitude)[0], rows)
    f = qsm.hz_to_ppm(np.where(mask, f_hz, 0), 3.0).astype(np.float32)
    local = timed("background: PDF (default)", lambda: qsm.pdf(f, mask, 1.0), rows)
    timed("background: V-SHARP 12->1 mm", lambda: qsm.vsharp(f, mask, 1.0), rows)
    timed("background: LBV", lambda: qsm.lbv(f, mask, 1.0), rows)
    timed("inversion: TKD", lambda: qsm.tkd(local, mask, 1.0), rows)
    iters = []

    def tv():
        out = qsm.tv_admm(local, mask, 1.0, progress=lambda fr, msg: iters.append(msg))
        return out

    timed("inversion: TV-ADMM (default)", tv, rows)
    n_tv = len(iters)
    print(f"  (TV-ADMM ran {n_tv} iterations)")
    timed("inversion: Tikhonov CG", lambda: qsm.tikhonov(local, mask, 1.0), rows)
    t = time.perf_counter()
    qsm.fit_qsm(h.magnitude, h.phase, h.echo_times, field_strength=3.0, affine=h.affine)
    whole = time.perf_counter() - t
    print(f"{'WHOLE default pipeline (fit_qsm)':<40s} {whole:8.2f} s  (target < 60 s)")

    # peer: one naive TV iteration vs one of ours (same arithmetic)
    d_full = dipole_kernel(shape, 1.0, (0, 0, 1))
    t = time.perf_counter()
    naive_tv_iteration(local.astype(np.float64), d_full)
    naive = time.perf_counter() - t
    ours_per_iter = dict(rows)["inversion: TV-ADMM (default)"] / max(n_tv, 1)
    print(f"TV iteration: ours {ours_per_iter:.3f} s, naive numpy.fft complex128 full volume {naive:.3f} s, "
          f"ratio {naive / ours_per_iter:.2f}x")


if __name__ == "__main__":
    main()

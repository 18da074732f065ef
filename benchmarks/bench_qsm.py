"""Time each QSM step and the default whole pipeline on a 256x256x128 head (1 mm, 4 echoes), against a peer.

Run: ``python benchmarks/bench_qsm.py [--size 256 256 128] [--skip-peer]``.

Ours: ``napari_myelin.reconst.qsm`` -- every FFT step on the brain mask's bounding box (+ margin) at
``scipy.fft.next_fast_len`` sizes, real float32 transforms on all cores, image-space Laplacians, in-place
ADMM updates, closed-form float32 echo fit, median filter on a 2x downsampled magnitude, one Laplacian
unwrapping (of the first echo difference) guiding the unwrapping along TE.

Peer: the previous implementation of the same steps (kept here, in this script only): the whole field of
view, float64 echo fit, four k-space Laplacians per echo, PDF on the full grid padded by half of each axis,
TV-ADMM (lambda 2e-4, tol 1e-3) on the bounding box padded by half of each axis with per-iteration
temporaries, Laplacian unwrapping of every echo (four k-space Laplacians each), median filter of
radius 2 on the downsampled magnitude and hole filling at full resolution. Both run in the same process
on the same data; the PDF peer is too slow to run to the end (more than 5 minutes), so it is timed for a
few iterations and extrapolated to its 40-iteration budget (labelled).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from napari_myelin.reconst import qsm  # noqa: E402
from napari_myelin.reconst.dipole import dipole_kernel  # noqa: E402
from napari_myelin.reconst.qsm.grid import _bbox, _cg, _fast_box, _Grid, _paste  # noqa: E402
from napari_myelin.reconst.qsm.inversion import _grad, _grad_symbol, _grad_t  # noqa: E402
from napari_myelin.reconst.qsm.unwrap import _align_echo_offsets  # noqa: E402
from tests._qsm_phantom import make_head  # noqa: E402

# ------------------------------------------------------------------ the peer: previous implementation


def peer_brain_mask(magnitude):
    from dipy.segment.mask import median_otsu

    mag = np.sqrt((np.asarray(magnitude, np.float32) ** 2).sum(-1))
    shape = mag.shape
    crop = tuple(n - n % 2 for n in shape)
    m = mag[: crop[0], : crop[1], : crop[2]]
    small = m.reshape(crop[0] // 2, 2, crop[1] // 2, 2, crop[2] // 2, 2).mean(axis=(1, 3, 5))
    _, mask = median_otsu(small, median_radius=2, numpass=2)
    up = np.zeros(shape, bool)
    big = mask.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    up[: big.shape[0], : big.shape[1], : big.shape[2]] = big
    lab, n = ndimage.label(up)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(lab == (1 + int(np.argmax(sizes))))


def peer_laplacian_unwrap(phase, voxel):
    phase = np.asarray(phase, np.float32)
    if phase.ndim == 4:
        return np.stack([peer_laplacian_unwrap(phase[..., i], voxel) for i in range(phase.shape[-1])], -1)
    g = _Grid(phase.shape, 0)
    lap = g.lap_symbol(voxel)
    s, c = np.sin(phase), np.cos(phase)
    rhs = g.fft(c * g.ifft(g.fft(s) * lap) - s * g.ifft(g.fft(c) * lap))
    inv = np.zeros_like(lap)
    inv[lap != 0] = 1.0 / lap[lap != 0]
    return g.ifft(rhs * inv)


def peer_echo_fit(phi, te, mag):
    te = np.asarray(te, np.float64)
    phi = np.asarray(phi, np.float64)
    w = np.asarray(mag, np.float64) ** 2
    w = w + 1e-12 * (w.max() + 1e-30)
    sw = w.sum(-1)
    tm = (w * te).sum(-1) / sw
    pm = (w * phi).sum(-1) / sw
    dt = te - tm[..., None]
    slope = (w * dt * (phi - pm[..., None])).sum(-1) / (w * dt * dt).sum(-1)
    return (slope / (2 * np.pi)).astype(np.float32)


def peer_pdf(field, mask, voxel, iterations):
    f = np.where(mask, field, 0).astype(np.float32)
    g = _Grid(f.shape, "auto")
    d = dipole_kernel(g.full, voxel, (0, 0, 1), real=True, dtype=np.float32)
    out_full = np.ones(g.full, np.float32)
    out_full[g.sl] = ~mask
    w2_full = np.zeros(g.full, np.float32)
    w2_full[g.sl] = mask
    f_full = np.zeros(g.full, np.float32)
    f_full[g.sl] = f

    def dop(x):
        return sfft.irfftn(sfft.rfftn(x, workers=g.workers) * d, s=g.full, workers=g.workers)

    def a(x):
        x = x.reshape(g.full)
        return (out_full * dop(w2_full * dop(out_full * x))).ravel()

    b = (out_full * dop(w2_full * f_full)).ravel()
    return _cg(a, b, max_iter=iterations, tol=0.0)


def peer_tv(local, mask, voxel, lam=2e-4, rho=2e-2, max_iter=200, tol=1e-3):
    sl = _bbox(mask, 4)
    g = _Grid(mask[sl].shape, "auto")
    d = dipole_kernel(g.full, voxel, (0, 0, 1), real=True, dtype=np.float32)
    denom = d * d + rho * _grad_symbol(g.full)
    denom.flat[0] = 1.0
    f_full = np.zeros(g.full, np.float32)
    f_full[g.sl] = np.where(mask, local, 0)[sl]
    dfs = sfft.rfftn(f_full, workers=g.workers) * d
    z = np.zeros((3,) + g.full, np.float32)
    u = np.zeros_like(z)
    chi = np.zeros(g.full, np.float32)
    it = 0
    for it in range(max_iter):
        rhs = dfs + rho * sfft.rfftn(_grad_t(z - u), workers=g.workers)
        new = sfft.irfftn(rhs / denom, s=g.full, workers=g.workers).astype(np.float32)
        change = np.linalg.norm(new - chi) / max(np.linalg.norm(new), 1e-12)
        chi = new
        v = _grad(chi) + u
        z = np.sign(v) * np.maximum(np.abs(v) - lam / rho, 0)
        u = v - z
        if it > 5 and change < tol:
            break
    return chi, it + 1


# ------------------------------------------------------------------ timing


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 128))
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--pdf-peer-iterations", type=int, default=3)
    args = ap.parse_args(argv)
    shape = tuple(args.size)
    print(f"QSM benchmark on {shape} voxels (1 mm), 4 echoes, {os.cpu_count()} CPU cores; building the head ...",
          flush=True)
    h = make_head(shape=shape, voxel_mm=1.0, echo_times=(0.004, 0.010, 0.016, 0.022))
    te, vox = h.echo_times, 1.0
    rows = []

    def report(label, ours, peer=None, note=""):
        rows.append((label, ours, peer))
        ratio = f"{peer / ours:6.1f}x" if peer else ""
        peer_s = f"{peer:9.2f}" if peer else f"{'':9s}"
        print(f"{label:<38s} {ours:8.2f} {peer_s} {ratio:>8s} {note}", flush=True)

    print(f"{'step':<38s} {'ours s':>8s} {'peer s':>9s} {'peer/ours':>8s}")
    ph, t = timed(lambda: qsm.phase_to_radians(h.phase))
    report("phase scaling", t)
    mask, t = timed(lambda: qsm.brain_mask(h.magnitude))
    peer_t = None if args.skip_peer else timed(lambda: peer_brain_mask(h.magnitude))[1]
    report("brain mask (median_otsu)", t, peer_t)
    box = _fast_box(mask, 8)
    phc, magc, maskc = ph[box], h.magnitude[box], mask[box]
    print(f"  (crop to the mask's box + 8 voxels: {phc.shape[:3]} = "
          f"{np.prod(phc.shape[:3]) / np.prod(shape):.0%} of the field of view)")
    maskc, t = timed(lambda: qsm.signal_mask(magc, te, maskc))
    report("signal mask (echo-fit precision)", t)
    uw, t = timed(lambda: qsm.unwrap_echoes(phc, te, maskc, vox))
    peer_uw = peer_t = None
    if not args.skip_peer:
        peer_uw, peer_t = timed(lambda: _align_echo_offsets(peer_laplacian_unwrap(ph, vox), te, mask))
    report("unwrapping (Laplacian; 4 echoes)", t, peer_t,
           "(ours: echo difference + guided temporal; peer: every echo, whole FOV)")
    f_hz, t = timed(lambda: qsm.echo_fit(uw, te, magc)[0])
    if not args.skip_peer:
        peer_t = timed(lambda: peer_echo_fit(peer_uw, te, h.magnitude))[1]
        del peer_uw
    report("echo fit (weighted LS over TE)", t, peer_t)
    f = qsm.hz_to_ppm(np.where(maskc, f_hz, 0), 3.0).astype(np.float32)
    it = []
    local, t = timed(lambda: qsm.pdf(f, maskc, vox, progress=lambda a, b: it.append(b)))
    peer_t = note = None
    if not args.skip_peer:
        k = args.pdf_peer_iterations
        f_full = _paste(f, box, shape)
        peer_k = timed(lambda: peer_pdf(f_full, mask, vox, k))[1]
        peer_t = peer_k / k * 40
        note = f"(PDF {len(it)} CG iterations; peer {k} iterations timed, x40 extrapolated)"
    report("background: PDF (default)", t, peer_t, note or "")
    _, t = timed(lambda: qsm.vsharp(f, maskc, vox))
    report("background: V-SHARP 12->1 mm", t)
    _, t = timed(lambda: qsm.lbv(f, maskc, vox))
    report("background: LBV", t)
    _, t = timed(lambda: qsm.tkd(local, maskc, vox))
    report("inversion: TKD", t)
    it = []
    _, t = timed(lambda: qsm.tv_admm(local, maskc, vox, progress=lambda a, b: it.append(b)))
    n_ours = len(it)
    peer_t = note = None
    if not args.skip_peer:
        (_, n_peer), peer_t = timed(lambda: peer_tv(local, maskc, vox))
        note = f"(ours {n_ours} iterations, {t / n_ours:.2f} s each; peer {n_peer}, {peer_t / n_peer:.2f} s each)"
    report("inversion: TV-ADMM (default)", t, peer_t, note or "")
    _, t = timed(lambda: qsm.tikhonov(local, maskc, vox))
    report("inversion: Tikhonov CG", t)

    _, whole = timed(lambda: qsm.fit_qsm(h.magnitude, h.phase, te, field_strength=3.0, affine=h.affine))
    peer_whole = None
    if not args.skip_peer:
        peer_whole = sum(p for label, _, p in rows if p is not None) + dict(
            (r[0], r[1]) for r in rows)["phase scaling"]
    print("-" * 72)
    report("WHOLE default pipeline (fit_qsm)", whole, peer_whole,
           "(target < 60 s; peer = sum of its steps above)" if peer_whole else "(target < 60 s)")


if __name__ == "__main__":
    main()

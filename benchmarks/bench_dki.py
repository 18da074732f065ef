"""Time napari-myelin's DKI fit against dipy 1.12.1 on the same data, in the same run.

Usage::

    python benchmarks/bench_dki.py                 # full phantom DWI (or --synthetic), dipy on 20000 voxels
    python benchmarks/bench_dki.py --voxels 0      # dipy on every voxel too (slow)
    python benchmarks/bench_dki.py --synthetic     # synthetic multi-shell volume of phantom size

napari-myelin fits every brain voxel (fit + FA/MD/AD/RD + analytical MK/AK/RK + KFA/MKT + colour FA).
dipy runs ``DiffusionKurtosisModel(gtab, fit_method="WLS").fit(data, mask=...)`` and then the same maps
with its fastest calls (``mean_kurtosis``/``axial_kurtosis``/``radial_kurtosis`` on the whole parameter
array, Cython). When ``--voxels N`` is smaller than the mask, dipy fits the first N voxels of the mask
and its whole-volume time is EXTRAPOLATED linearly (dipy's fit is a per-voxel loop, so its time is
proportional to the number of voxels); the printout says so. Identity is the largest absolute
difference between the two on the voxels both fitted.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def synthetic_dwi(shape=(91, 109, 91), n_unique=400, snr=50.0, seed=0):
    """A phantom-sized multi-shell DWI: an ellipsoidal 'brain' of dipy-simulated two-compartment voxels.

    Returns ``(dwi float32 (X, Y, Z, N), bvals, bvecs, mask)``; b = 0 (x6), 1000 (x30), 2000 (x30).
    """
    from dipy.core.gradients import gradient_table
    from dipy.core.sphere import HemiSphere, disperse_charges
    from dipy.sims.voxel import multi_tensor_dki

    rng = np.random.default_rng(seed)
    theta, phi = np.arccos(rng.uniform(-1, 1, 30)), rng.uniform(0, 2 * np.pi, 30)
    dirs = disperse_charges(HemiSphere(theta=theta, phi=phi), 500)[0].vertices
    bvals = np.r_[np.zeros(6), np.full(30, 1000.0), np.full(30, 2000.0)]
    bvecs = np.r_[np.zeros((6, 3)), dirs, dirs]
    gtab = gradient_table(bvals, bvecs=bvecs)
    signals = np.empty((n_unique, bvals.size))
    for i in range(n_unique):
        ax = rng.uniform(1.4e-3, 2.0e-3)
        mevals = np.array([[ax, r, r] for r in (rng.uniform(0.1e-3, 0.4e-3), rng.uniform(0.5e-3, 0.9e-3))])
        angles = [(rng.uniform(0, 180), rng.uniform(0, 360)) for _ in range(2)]
        signals[i] = multi_tensor_dki(gtab, mevals, S0=1000.0, angles=angles, fractions=[60, 40], snr=None)[0]
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.42
    mask = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1
    n = int(mask.sum())
    sigma = 1000.0 / snr
    clean = signals[rng.integers(0, n_unique, n)]
    noisy = np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
    dwi = np.zeros(shape + (bvals.size,), np.float32)
    dwi[mask] = noisy
    return dwi, bvals, bvecs, mask


def phantom_dwi(size="full", snr=50.0):
    from napari_myelin.sims.phantom import make_phantom

    ph = make_phantom(seed=0, size=size, snr=snr)
    vol = ph.acq["dwi"]
    mask = np.asarray(ph.truth["dwi"]["mask"].data) > 0
    return np.asarray(vol.data), vol.bvals, vol.bvecs, mask


def dipy_maps(data2d, bvals, bvecs):
    """dipy's WLS DKI on ``(n, N)`` voxels and its maps, with its fastest (whole-array) calls."""
    import dipy.reconst.dki as dki
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import axial_diffusivity, fractional_anisotropy, mean_diffusivity, radial_diffusivity

    model = dki.DiffusionKurtosisModel(gradient_table(bvals, bvecs=bvecs), fit_method="WLS")
    t0 = time.perf_counter()
    c0 = time.process_time()
    fit = model.fit(data2d[:, None, None, :], mask=np.ones((data2d.shape[0], 1, 1), bool))
    params = np.asarray(fit.model_params).reshape(-1, 27)
    t1 = time.perf_counter()
    evals = params[:, :3]
    maps = {
        "fa": fractional_anisotropy(evals), "md": mean_diffusivity(evals), "ad": axial_diffusivity(evals),
        "rd": radial_diffusivity(evals),
        "mk": dki.mean_kurtosis(params, min_kurtosis=-3 / 7, max_kurtosis=10),
        "ak": dki.axial_kurtosis(params), "rk": dki.radial_kurtosis(params),
        "kfa": dki.kurtosis_fractional_anisotropy(params), "mkt": dki.mean_kurtosis_tensor(params),
    }
    t2 = time.perf_counter()
    return maps, t1 - t0, t2 - t1, time.process_time() - c0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voxels", type=int, default=20000, help="voxels dipy fits (0 = all; default 20000)")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic phantom-sized volume")
    parser.add_argument("--size", default="full", choices=("full", "small"), help="phantom size")
    parser.add_argument("--snr", type=float, default=50.0)
    args = parser.parse_args(argv)

    from napari_myelin.reconst.dki import fit_dki

    source = "synthetic multi-shell volume 91x109x91 (dipy multi_tensor_dki voxels, Rician SNR %g)" % args.snr
    if not args.synthetic:
        try:
            dwi, bvals, bvecs, mask = phantom_dwi(args.size, args.snr)
            source = f"napari-myelin phantom DWI (size={args.size}, SNR {args.snr:g})"
        except ImportError:
            print("sims.phantom is not available: using the synthetic volume (--synthetic)")
            args.synthetic = True
    if args.synthetic:
        dwi, bvals, bvecs, mask = synthetic_dwi(snr=args.snr)
    n_mask = int(mask.sum())
    print(f"data: {source}; shape {dwi.shape}, {n_mask} voxels in the mask, b-values {sorted(set(bvals.tolist()))}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, numpy {np.__version__}")

    t0, c0 = time.perf_counter(), time.process_time()
    maps = fit_dki(dwi, bvals, bvecs, mask=mask, method="WLS")
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    print(f"napari-myelin fit_dki: {t_ours:.2f} s wall, {c_ours:.2f} s CPU (all threads) for {n_mask} voxels "
          f"({n_mask / t_ours:,.0f} voxels/s), all maps")

    n_dipy = n_mask if args.voxels <= 0 else min(args.voxels, n_mask)
    data2d = np.asarray(dwi[mask][:n_dipy], dtype=float)
    ref, t_fit, t_maps, c_dipy = dipy_maps(data2d, bvals, bvecs)
    t_dipy = t_fit + t_maps
    label = "measured"
    factor = 1.0
    if n_dipy < n_mask:
        factor = n_mask / n_dipy
        label = f"EXTRAPOLATED linearly from {n_dipy} voxels"
    print(f"dipy 1.12.1 WLS: {t_dipy:.2f} s wall, {c_dipy:.2f} s CPU for {n_dipy} voxels (fit {t_fit:.2f} s + "
          f"maps {t_maps:.2f} s; {n_dipy / t_dipy:,.0f} voxels/s)")
    print(f"dipy on the whole mask: {t_dipy * factor:.1f} s wall, {c_dipy * factor:.1f} s CPU ({label})")
    print(f"speed-up napari-myelin / dipy: {t_dipy * factor / t_ours:.1f}x wall-clock, "
          f"{c_dipy * factor / c_ours:.1f}x CPU time")
    print("identity on the voxels both fitted (max |napari-myelin - dipy|):")
    for key in ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt"):
        ours = maps[key][mask][:n_dipy]
        print(f"  {key:4s} {np.abs(ours - ref[key]).max():.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

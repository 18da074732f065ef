"""Fusion CNN on held-out phantom subjects: accuracy table against the baselines, and inference time.

For every held-out seed (never used in training or validation; lesions + NAWM demyelination on odd seeds)
the inputs are made exactly as for training (``napari_myelin.workflows.training_set``, ``mode="estimators"``):
the project's estimators (``reconst.mwf``, ``reconst.dki``, ``reconst.qpm``, ``reconst.qsm``) run on the phantom's
simulated acquisitions and the maps are brought to the 2 mm MNI template by the subject pipeline's
registrations (rigid co-registration to the SPGR reference, ``register_to_template`` preset "fast"); the true
MWF follows the reference's transform. Five integrated-MWF estimates are compared with the true MWF in white
matter (WM fraction > 0.5):

* MWF alone (the spin-echo estimate, in %),
* calibrated QPM alone (linear MWF = a + b QPM),
* linear regression fusion of MWF, FA, MK, QPM, QSM,
* the quadratic QPM calibration of the original method (MWF = c0 + c1 QPM + c2 QPM^2),
* the CNN (shipped weights, mean of 8 MC-dropout passes).

Regression coefficients come from the model card (fitted on the training subjects). Then the CNN's
inference time on the 2 mm MNI template volume (the subjects' grid) is measured against the quadratic
method (the peer, numpy) in the same run.

Usage: ``python benchmarks/bench_fusion.py [--seeds 1000,1001,1002,1003,1005,1007,1009] [--snr 200] [--size small] [--cache DIR]
[--threads 2] [--weights W.safetensors]`` (processed subjects are cached: ~75 s each the first time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_myelin.fusion.evaluation import apply_regression, subject_metrics
from napari_myelin.fusion.inference import fuse
from napari_myelin.fusion.weights import load_model
from napari_myelin.workflows.training_set import build_training_set

METHODS = ["mwf_alone", "calibrated_qpm", "linear_fusion", "quadratic_qpm", "cnn"]


def predictions(model, s) -> dict[str, np.ndarray]:
    out = {"mwf_alone": 100.0 * s.inputs["mwf"]}
    for name, b in model.card["baselines"].items():
        out[name] = apply_regression(s.inputs, b["coefficients"], b["channels"], b["quadratic"], mask=s.mask)
    res = fuse(*(s.inputs[c] for c in ("mwf", "fa", "mk", "qpm", "qsm")), weights=model, mask=s.mask,
               voxel_size_mm=s.meta["voxel_size_mm"])
    out["cnn"] = res["imwf"]
    out["cnn_sd"] = res["imwf_sd"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1000,1001,1002,1003,1005,1007,1009")
    ap.add_argument("--snr", type=float, default=200.0)
    ap.add_argument("--size", default="small", choices=["small", "full"])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "napari-myelin" / "fusion-estimators"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    seeds = [int(s) for s in args.seeds.split(",")]
    seen = set(model.card["training"]["data"].get("train_seeds", [])) | set(
        model.card["training"]["data"].get("validation_seeds", []))
    if seen & set(seeds):
        raise SystemExit(f"seeds {sorted(seen & set(seeds))} were used in training/validation; pick held-out seeds")
    subjects = build_training_set(seeds, size=args.size, snrs=[args.snr], mode="estimators", preset=args.preset,
                                  cache_dir=args.cache)
    rows = {m: [] for m in METHODS}
    coverage = []
    for s in subjects:
        preds = predictions(model, s)
        for m in METHODS:
            r = subject_metrics(preds[m], s)
            r["wm_bias"] = float(np.mean(preds[m][s.wm] - 100 * s.target[s.wm]))
            rows[m].append(r)
        err = np.abs(preds["cnn"][s.wm] - 100 * s.target[s.wm])
        coverage.append(float(np.mean(err <= 1.96 * preds["cnn_sd"][s.wm])))

    def agg(m, key, f=np.mean):
        vals = [r[key] for r in rows[m] if key in r]
        return f(vals) if vals else float("nan")

    rmse = {m: float(np.sqrt(np.mean([r["wm_rmse"] ** 2 for r in rows[m]]))) for m in METHODS}
    best_other = min(rmse[m] for m in METHODS if m != "cnn")
    bias = {m: float(np.mean([r["wm_bias"] for r in rows[m]])) for m in METHODS}
    print(f"held-out phantom seeds {seeds} (size {args.size}, SNR {args.snr:g}, real estimators + registration to "
          f"the 2 mm template), {sum(r['wm_n'] for r in rows['cnn'])} WM voxels")
    print("| method | WM RMSE (MWF %) | WM mean error | worst tract-mean error | mean tract-mean error | "
          "lesion deficit error | NAWM deficit error |")
    print("|---|---|---|---|---|---|---|")
    for m in METHODS:
        print(f"| {m} | {rmse[m]:.2f} | {bias[m]:+.2f} | {agg(m, 'tract_mean_abs_error_max', np.max):.2f} | "
              f"{agg(m, 'tract_mean_abs_error_mean'):.2f} | {100 * agg(m, 'lesion_deficit_rel_error'):.0f} % | "
              f"{100 * agg(m, 'nawm_deficit_rel_error'):.0f} % |")
    print(f"CNN RMSE vs best other: {100 * (1 - rmse['cnn'] / best_other):.1f} % lower (target >= 25 %)")
    print(f"true lesion deficit {agg('cnn', 'lesion_deficit_true'):.2f} points, CNN {agg('cnn', 'lesion_deficit_est'):.2f}; "
          f"true NAWM deficit {agg('cnn', 'nawm_deficit_true'):.2f}, CNN {agg('cnn', 'nawm_deficit_est'):.2f}")
    print(f"CNN uncertainty: {100 * np.mean(coverage):.0f} % of WM voxels within +-1.96 SD of the truth")

    # ---------------------------------------------------------------- inference time, 2 mm template volume
    s = subjects[0]
    shape = s.mask.shape
    inputs = {c: s.inputs[c] for c in ("mwf", "fa", "mk", "qpm", "qsm")}
    mask = s.mask
    fuse(*inputs.values(), weights=model, mask=mask, n_samples=1)  # warm-up
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fuse(*inputs.values(), weights=model, mask=mask, voxel_size_mm=2.0)
        times.append(time.perf_counter() - t)
    q = model.card["baselines"]["quadratic_qpm"]
    t = time.perf_counter()
    for _ in range(3):
        apply_regression(inputs, q["coefficients"], q["channels"], q["quadratic"], mask=mask)
    t_peer = (time.perf_counter() - t) / 3
    t_cnn = float(np.median(times))
    print(f"inference on a {'x'.join(map(str, shape))} 2 mm template volume, {args.threads} threads: "
          f"CNN (8 MC-dropout samples) {t_cnn:.2f} s; quadratic QPM (peer, numpy) {t_peer:.3f} s; "
          f"ratio {t_cnn / t_peer:.0f}x (target: CNN < 10 s)")
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}; training time in the model card: "
          f"{model.card['training']['seconds']:.0f} s")


if __name__ == "__main__":
    main()

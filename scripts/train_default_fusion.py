"""Train the shipped fusion weights (src/napari_myelin/data/fusion/fusion_default.safetensors + .json).

Phantom cohort, *simulated estimators* (see napari_myelin.core.fusion_train): training seeds 0-5 (each at
SNR 100, 200 and 400: three independent noise realisations of each anatomy), validation seeds 100-101 (split
by subject), lesions and NAWM demyelination on odd seeds. Held-out seeds >= 1000 are for the benchmark
(benchmarks/bench_fusion.py) and never meet training. The regression baselines (calibrated QPM, linear
fusion, quadratic QPM calibration) are fitted on the same training subjects and stored in the model card.

Usage::

    python scripts/train_default_fusion.py [--cache DIR] [--out DIR] [--threads N]

Phantom truths are cached in ``--cache`` (default ~/.cache/napari-myelin/fusion) so that only the first
run pays for the phantom generation (about 2 minutes per 2 mm subject on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_myelin.core.fusion import default_weights_path, fit_regression, save_model, train_fusion
from napari_myelin.core.fusion_train import SIMULATED_NOTE, build_training_set

TRAIN_SEEDS = list(range(0, 6))
VAL_SEEDS = [100, 101]
SNRS = [100.0, 200.0, 400.0]
#: The baselines of the comparison table: name -> (channels, quadratic).
BASELINES = {
    "calibrated_qpm": (["qpm"], False),
    "linear_fusion": (["mwf", "fa", "mk", "qpm", "qsm"], False),
    "quadratic_qpm": (["qpm"], True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "napari-myelin" / "fusion"))
    ap.add_argument("--out", default=str(default_weights_path().parent))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--patch", type=int, default=24)
    ap.add_argument("--max-minutes", type=float, default=12.0, help="wall-clock budget")
    ap.add_argument("--checkpoint", default=None, help="resumable checkpoint folder (resumed when present)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train = build_training_set(TRAIN_SEEDS, size="full", snrs=SNRS, every_snr=True, cache_dir=args.cache)
    val = build_training_set(VAL_SEEDS, size="full", snrs=[200.0], cache_dir=args.cache)
    t_data = time.perf_counter() - t0
    data = {"source": "phantom (napari_myelin.core.phantom, size 'full': 2 x 2 x 3 mm spin-echo grid)",
            "mode": "simulated estimators", "note": SIMULATED_NOTE, "train_seeds": TRAIN_SEEDS,
            "train_snrs": SNRS, "validation_seeds": VAL_SEEDS, "validation_snr": 200.0,
            "held_out_seeds_for_benchmark": ">= 1000", "lesions": "odd seeds (lesions + NAWM demyelination)",
            "data_preparation_seconds": round(t_data, 1)}
    model, hist = train_fusion(train, val, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=4, patch=args.patch,
                               lr=3e-3, patience=10, seed=0, max_seconds=60 * args.max_minutes,
                               checkpoint_dir=args.checkpoint, resume=args.checkpoint is not None, voxel_size_mm=train[0].meta["voxel_size_mm"], training_data=data,
                               progress=lambda f, m: print(f"\r{100 * f:5.1f}% {m}", end="", flush=True))
    print()
    model.card["baselines"] = {
        name: {"channels": ch, "quadratic": quad, "coefficients": fit_regression(train, ch, quad)}
        for name, (ch, quad) in BASELINES.items()
    }
    model.card["training"]["threads"] = args.threads
    out = Path(args.out)
    path = save_model(model, out / "fusion_default.safetensors")
    print(f"wrote {path}: {model.card['architecture']['parameters']} parameters, validation WM RMSE "
          f"{model.card['metrics']['validation_wm_rmse_percent']:.2f} %, training {hist['seconds']:.0f} s "
          f"wall, {hist['cpu_seconds']:.0f} s CPU (+ {t_data:.0f} s data)")


if __name__ == "__main__":
    main()

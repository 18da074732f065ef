"""Train the shipped fusion weights (src/napari_myelin/data/fusion/fusion_default.safetensors + .json).

Phantom cohort processed like real subjects (``mode="estimators"`` of :mod:`napari_myelin.core.fusion_train`):
for every phantom (``make_phantom(seed, size="small", snr, lesions)``) the project's own estimators run on the
simulated acquisitions (``core.mwf.fit_t2_distribution`` + ``t2_parts``, ``core.dki.fit_dki``,
``core.qpm.qpm``, ``core.qsm.fit_qsm``), and the maps are brought to the 2 mm MNI template with the subject
pipeline's registrations (``core.pipeline._Registrations``: rigid ``coregister`` of each modality to the SPGR
reference, ``register_to_template`` preset "fast"). The true MWF (SPGR grid) follows the reference's
template transform. Training seeds 0-11 (SNR 100/200/400 cycling with the seed), validation seeds 100-101
(SNR 200; split by subject), lesions and NAWM demyelination on odd seeds. Held-out seeds >= 1000 are for the
benchmark (benchmarks/bench_fusion.py) and the tests, and never meet training. The regression baselines
(calibrated QPM, linear fusion, quadratic QPM calibration) are fitted on the same training subjects and stored
in the model card.

Usage::

    python scripts/train_default_fusion.py [--cache DIR] [--out DIR] [--threads N] [--max-minutes M]

Processed subjects are cached in ``--cache`` (default ~/.cache/napari-myelin/fusion-estimators; about 75 s per
small phantom on 2 idle cores, most of it the NNLS MWF fit), so only the first run pays for them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_myelin.core.fusion import (
    default_weights_path,
    fit_regression,
    save_model,
    train_fusion,
)
from napari_myelin.core.fusion_train import ESTIMATORS_NOTE, build_training_set

TRAIN_SEEDS = list(range(12))
VAL_SEEDS = [100, 101]
SNRS = [100.0, 200.0, 400.0]
SIZE = "small"
PRESET = "fast"
#: The baselines of the comparison table: name -> (channels, quadratic).
BASELINES = {
    "calibrated_qpm": (["qpm"], False),
    "linear_fusion": (["mwf", "fa", "mk", "qpm", "qsm"], False),
    "quadratic_qpm": (["qpm"], True),
}

DATA_NOTE = ESTIMATORS_NOTE + (
    " The phantoms are size 'small' (4-4.5 mm acquisitions) upsampled onto the 2 mm template grid, so the maps "
    "are smoother than those of a 2 mm acquisition; the cohort is small (12 training anatomies, one SNR each)."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "napari-myelin" / "fusion-estimators"))
    ap.add_argument("--out", default=str(default_weights_path().parent))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--max-minutes", type=float, default=12.0, help="wall-clock budget of the training loop")
    ap.add_argument("--checkpoint", default=None, help="resumable checkpoint folder (resumed when present)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train = build_training_set(TRAIN_SEEDS, size=SIZE, snrs=SNRS, mode="estimators", preset=PRESET,
                               cache_dir=args.cache)
    val = build_training_set(VAL_SEEDS, size=SIZE, snrs=[200.0], mode="estimators", preset=PRESET,
                             cache_dir=args.cache)
    t_data = time.perf_counter() - t0
    data = {"source": "phantom (napari_myelin.core.phantom, size 'small'), processed by the project's estimators "
                      "and registered to the 2 mm MNI template like a subject",
            "mode": "estimators", "note": DATA_NOTE, "size": SIZE, "registration_preset": PRESET,
            "grid": "MNI ICBM152 2009a, 2 mm, 99 x 117 x 95",
            "train_seeds": TRAIN_SEEDS, "train_snrs": [SNRS[i % len(SNRS)] for i in range(len(TRAIN_SEEDS))],
            "validation_seeds": VAL_SEEDS, "validation_snr": 200.0,
            "held_out_seeds_for_benchmark": ">= 1000", "lesions": "odd seeds (lesions + NAWM demyelination)",
            "data_preparation": "about 75 s per subject on 2 idle cores (estimators ~55 s, registration ~25 s); "
                                "cached",
            "data_loading_seconds": round(t_data, 1)}
    model, hist = train_fusion(train, val, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=4,
                               patch=args.patch, lr=3e-3, patience=10, seed=0, max_seconds=60 * args.max_minutes,
                               checkpoint_dir=args.checkpoint, resume=args.checkpoint is not None,
                               voxel_size_mm=train[0].meta["voxel_size_mm"], training_data=data,
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
          f"wall, {hist['cpu_seconds']:.0f} s CPU (+ {t_data:.0f} s loading cached subjects)")


if __name__ == "__main__":
    main()

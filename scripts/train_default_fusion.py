"""Train the shipped fusion weights (src/napari_myelin/data/fusion/fusion_default.safetensors + .json).

Phantom cohort processed like real subjects (``mode="estimators"`` of :mod:`napari_myelin.workflows.training_set`):
for every phantom the project's own estimators run on the simulated acquisitions
(``reconst.mwf.fit_t2_distribution`` + ``t2_parts``, ``reconst.dki.fit_dki``, ``reconst.qpm.qpm``, ``reconst.qsm.fit_qsm``,
``reconst.mtsat.fit_mtsat`` on the MT-weighted trio, ``reconst.chisep.separate_susceptibility`` with the
spin echo's mono-exponential R2 -> ``chi_dia``), and the maps are brought to the 2 mm MNI template with the subject pipeline's registrations
(``workflows.pipeline.SubjectRegistrations``: rigid ``coregister`` of each modality to the SPGR reference,
``register_to_template`` preset "fast"). The true MWF (SPGR grid) follows the reference's template transform.
Training mixes full-size seeds 0, 1, 2, 3, 5, 7, 9 (2 mm acquisitions, each drawn 3x as often) with small
seeds 0-11 (4-4.5 mm); SNR 100/200/400 cycles with the seed's position in each list; validation on full-size
seeds 100-101 (SNR 200; split by subject); lesions and NAWM demyelination on odd seeds. The loss adds the
squared error of lesion / NAWM-demyelination region means (``REGION_WEIGHT``), a quarter of the patches of
subjects with lesions are centred on them, and the network's gain and offset act on the MWF averaged with a
Gaussian of SD ``SKIP_SIGMA`` voxels (``fusion.skip_mwf``). Held-out seeds >= 1000 are for the benchmark
(benchmarks/bench_fusion.py) and the tests, and never meet training. The regression baselines (calibrated
QPM, linear fusion, quadratic QPM calibration) are fitted on the same training subjects and stored in the
model card. The training loop stops early (patience ``PATIENCE``) or at ``--max-minutes``.

Inputs: MWF, FA, MK, QPM and the optional QSM, MTsat and chi_dia (card format 3). Each optional map is dropped
(values and presence flag 0) from a patch with probability ``CHANNEL_DROPOUT`` = 0.5, independently, so each
of the 8 presence patterns of (QSM, MTsat, chi_dia) is trained on one patch in 8. The network is warm-started
from the previous shipped weights (``--init``, the card-format-2 weights kept in ``benchmarks/weights/``):
their tensors and normalisation are copied, the first convolution by input channel, with zero kernels for
MTsat, chi_dia and their presence flags, so that training starts from the previous network exactly.

Usage::

    python scripts/train_default_fusion.py [--cache DIR] [--out DIR] [--threads N] [--max-minutes M]
                                           [--init W.safetensors|none] [--full-seeds 0,1,2,...]

The shipped weights were trained with the defaults (1 torch thread, so that the other core stays free).

Processed subjects are cached in ``--cache`` (default ~/.cache/napari-myelin/fusion-estimators; about 95-125 s
per full-size and 75 s per small phantom on 2 idle cores, most of it the NNLS MWF fit), so only the first run
pays for them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_myelin.fusion.card import CHANNELS, default_weights_path
from napari_myelin.fusion.evaluation import fit_regression
from napari_myelin.fusion.training import train_fusion
from napari_myelin.fusion.weights import load_model, save_model
from napari_myelin.workflows.training_set import ESTIMATORS_NOTE, build_training_set

FULL_SEEDS = [0, 1, 2, 3, 5, 7, 9, 4, 6, 8, 11]  # size "full" (2 mm acquisitions, the template's resolution)
SMALL_SEEDS = list(range(12))  # size "small" (4-4.5 mm acquisitions, upsampled onto the template)
FULL_REPEAT = 3                # each full-size subject is drawn this many times as often as a small one
VAL_SEEDS = [100, 101]         # size "full"
SNRS = [100.0, 200.0, 400.0]
#: Pathology emphasis of the loss (see fusion.train_fusion): lesion / NAWM-demyelination voxel weight factor,
#: weight of the squared error of their region means, share of lesion-centred patches.
LESION_WEIGHT = 1.0
REGION_WEIGHT = 0.2
LESION_PATCH_FRACTION = 0.25
SKIP_SIGMA = 1.0               # voxels
PATIENCE = 18                  # early stopping: epochs without a better validation WM RMSE
LR_PATIENCE = 6                # learning rate halved after every 6 such epochs
PRESET = "fast"
CHANNEL_DROPOUT = 0.5          # per optional channel (QSM, MTsat, chi_dia), independently
#: The card-format-2 weights of release 0.2 (MWF, FA, MK, QPM, optional QSM): the warm start and the benchmark's
#: "previous weights".
PREVIOUS_WEIGHTS = Path(__file__).resolve().parent.parent / "benchmarks" / "weights" / "fusion_0.2.safetensors"
#: The baselines of the comparison table: name -> (channels, quadratic).
BASELINES = {
    "calibrated_qpm": (["qpm"], False),
    "linear_fusion": (["mwf", "fa", "mk", "qpm", "qsm"], False),
    "linear_fusion_all": (["mwf", "fa", "mk", "qpm", "qsm", "mtsat", "chi_dia"], False),
    "quadratic_qpm": (["qpm"], True),
}



def data_note(n_full: int, n_small: int) -> str:
    """What the model card says about the training data."""
    return ESTIMATORS_NOTE + (
        f" Training mixes {n_full} size 'full' phantoms (2 mm acquisitions, sampled {FULL_REPEAT}x as often) "
        f"with {n_small} size 'small' ones (4-4.5 mm, upsampled onto the 2 mm template); validation on "
        f"{len(VAL_SEEDS)} full-size phantoms; one SNR per anatomy."
    )


def cohort(seeds: list[int], order: list[int], size: str, cache: str) -> list:
    """Processed phantoms of ``seeds``; each seed keeps the SNR of its position in ``order`` (the whole cohort's
    list), so that a subset of the cohort reads the same cached subjects."""
    return [build_training_set([s], size=size, snrs=[SNRS[order.index(s) % len(SNRS)]], mode="estimators",
                               preset=PRESET, cache_dir=cache)[0] for s in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "napari-myelin" / "fusion-estimators"))
    ap.add_argument("--out", default=str(default_weights_path().parent))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--max-minutes", type=float, default=12.0, help="wall-clock budget of the training loop")
    ap.add_argument("--checkpoint", default=None, help="resumable checkpoint folder (resumed when present)")
    ap.add_argument("--init", default=str(PREVIOUS_WEIGHTS), help="warm start ('none': from scratch)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default 3e-4 warm-started, 3e-3 from scratch)")
    ap.add_argument("--full-seeds", default=",".join(map(str, FULL_SEEDS)),
                    help="size 'full' training seeds (default: the whole cohort)")
    ap.add_argument("--small-seeds", default=",".join(map(str, SMALL_SEEDS)),
                    help="size 'small' training seeds (default: the whole cohort)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full_seeds = [int(x) for x in args.full_seeds.split(",")]
    small_seeds = [int(x) for x in args.small_seeds.split(",")]
    init = None if args.init == "none" else load_model(args.init)
    lr = args.lr if args.lr is not None else (3e-3 if init is None else 3e-4)
    t0 = time.perf_counter()
    full = cohort(full_seeds, FULL_SEEDS, "full", args.cache)
    small = cohort(small_seeds, SMALL_SEEDS, "small", args.cache)
    train = full * FULL_REPEAT + small
    val = build_training_set(VAL_SEEDS, size="full", snrs=[200.0], mode="estimators", preset=PRESET,
                             cache_dir=args.cache)
    t_data = time.perf_counter() - t0
    data = {"source": f"phantom (napari_myelin.sims.phantom): size 'full' seeds {full_seeds} sampled {FULL_REPEAT}x "
                      f"as often as each size 'small' seed {small_seeds}, processed by the project's estimators "
                      "and registered to the 2 mm MNI template like a subject",
            "mode": "estimators", "note": data_note(len(full_seeds), len(small_seeds)), "size": "full (2 mm) + small (4-4.5 mm)",
            "registration_preset": PRESET, "grid": "MNI ICBM152 2009a, 2 mm, 99 x 117 x 95",
            "train_seeds": sorted(set(full_seeds + small_seeds)),
            "train_seeds_full": full_seeds, "train_seeds_small": small_seeds, "full_sampling_weight": FULL_REPEAT,
            "train_snrs_full": {str(s.meta["seed"]): s.meta["snr"] for s in full},
            "train_snrs_small": {str(s.meta["seed"]): s.meta["snr"] for s in small}, "validation_size": "full",
            "validation_seeds": VAL_SEEDS, "validation_snr": 200.0,
            "held_out_seeds_for_benchmark": ">= 1000", "lesions": "odd seeds (lesions + NAWM demyelination)",
            "data_preparation": "MWF NNLS fit, DKI, QPM, QSM, MTsat, chi-separation and registration per subject, "
                                "cached (see the fusion docs for the times)",
            "optional_inputs": "qsm, mtsat, chi_dia: each dropped from a patch with probability "
                               f"{CHANNEL_DROPOUT:g}, independently (all 8 presence patterns trained)",
            "data_loading_seconds": round(t_data, 1)}
    model, hist = train_fusion(train, val, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=4,
                               patch=args.patch, lr=lr, patience=PATIENCE, lr_patience=LR_PATIENCE, seed=0,
                               lesion_weight=LESION_WEIGHT, region_weight=REGION_WEIGHT,
                               lesion_patch_fraction=LESION_PATCH_FRACTION, skip_sigma=SKIP_SIGMA,
                               channels=CHANNELS, channel_dropout=CHANNEL_DROPOUT, init=init,
                               max_seconds=60 * args.max_minutes,
                               checkpoint_dir=args.checkpoint, resume=args.checkpoint is not None,
                               voxel_size_mm=train[0].meta["voxel_size_mm"], training_data=data,
                               progress=lambda f, m: print(f"\r{100 * f:5.1f}% {m}", end="", flush=True))
    print()
    model.card["baselines"] = {
        name: {"channels": ch, "quadratic": quad, "coefficients": fit_regression(train, ch, quad)}
        for name, (ch, quad) in BASELINES.items()
    }
    model.card["training"]["threads"] = args.threads
    model.card["training"]["script"] = (
        f"scripts/train_default_fusion.py --threads {args.threads} --epochs {args.epochs} --steps {args.steps} "
        f"--patch {args.patch} --max-minutes {args.max_minutes:g} --full-seeds {args.full_seeds} "
        f"--small-seeds {args.small_seeds} "
        f"--init {Path(args.init).name} --lr {lr:g} (stopped by {model.card['training']['stopped']})")
    out = Path(args.out)
    path = save_model(model, out / "fusion_default.safetensors")
    print(f"wrote {path}: {model.card['architecture']['parameters']} parameters, validation WM RMSE "
          f"{model.card['metrics']['validation_wm_rmse_percent']:.2f} %, training {hist['seconds']:.0f} s "
          f"wall, {hist['cpu_seconds']:.0f} s CPU (+ {t_data:.0f} s loading cached subjects)")


if __name__ == "__main__":
    main()

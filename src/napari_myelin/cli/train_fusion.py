"""``napari-myelin train-fusion``: train the fusion CNN on a phantom cohort or on a user cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_myelin.utils.errors import InputError
from napari_myelin.fusion.card import CHANNELS
from napari_myelin.fusion.training import train_fusion
from napari_myelin.fusion.weights import save_model
from napari_myelin.utils.progress import subrange
from napari_myelin.io.volume import check_output_folder
from ._common import add_out_argument, terminal_progress

HELP = "train the fusion CNN (phantom cohort or your subjects with a reference MWF map); writes weights + model card"


def _seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out_argument(parser)
    src = parser.add_argument_group("training data (phantom cohort by default)")
    src.add_argument("--cohort", metavar="TABLE", help="TSV/CSV of your subjects: columns subject, mwf, fa, mk, qpm, "
                     "[qsm], [mtsat], [chi_dia], reference (measured reference MWF), [mask], [wm]; split by subject "
                     "for validation")
    src.add_argument("--train-seeds", default="0-11", help="phantom seeds for training (default 0-11)")
    src.add_argument("--val-seeds", default="100-101", help="phantom seeds for validation (default 100-101)")
    src.add_argument("--size", default="small", choices=["small", "full"],
                     help="phantom size (small: 4 mm acquisitions, default; full: 2 mm subject, minutes per phantom)")
    src.add_argument("--mode", default="estimators", choices=["estimators", "simulated"],
                     help="phantom inputs: the project's estimators + the pipeline's registration to the 2 mm "
                          "template (default; ~75 s per small phantom) or simulated estimator noise/bias (fast)")
    src.add_argument("--preset", default="fast", choices=["fast", "affine", "accurate"],
                     help="registration preset of the estimators mode (as the subject pipeline)")
    src.add_argument("--cache", metavar="DIR", default=None,
                     help="folder where processed phantom subjects (and their transforms) are stored and reused")
    src.add_argument("--snrs", default="100,200,400", help="SNRs cycled over the phantom seeds")
    src.add_argument("--val-fraction", type=float, default=0.2, help="validation share of a user cohort")
    net = parser.add_argument_group("network and optimisation")
    net.add_argument("--channels", default=",".join(CHANNELS), help="input channels (qsm, mtsat, chi_dia optional)")
    net.add_argument("--width", type=int, default=8)
    net.add_argument("--epochs", type=int, default=30)
    net.add_argument("--steps", type=int, default=30, help="optimisation steps per epoch")
    net.add_argument("--batch", type=int, default=4)
    net.add_argument("--patch", type=int, default=32, help="patch edge (voxels)")
    net.add_argument("--lr", type=float, default=2e-3)
    net.add_argument("--patience", type=int, default=6, help="early stopping: epochs without validation gain")
    net.add_argument("--lesion-weight", type=float, default=1.0,
                     help="loss weight factor of lesion and NAWM-demyelination voxels (default 1: plain WM weight)")
    net.add_argument("--lesion-patches", type=float, default=0.0, metavar="FRACTION",
                     help="share of the patches of subjects with lesions centred on a lesion (default 0)")
    net.add_argument("--skip-sigma", type=float, default=0.0, metavar="VOXELS",
                     help="Gaussian SD of the MWF that the network's gain and offset apply to (default 0)")
    net.add_argument("--region-weight", type=float, default=0.0,
                     help="weight of the squared error of lesion / NAWM-demyelination region means (default 0)")
    net.add_argument("--seed", type=int, default=0)
    net.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that exceeds this time budget")
    net.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.* of an interrupted run")
    parser.add_argument("--name", default="fusion", help="output stem: DIR/NAME.safetensors + DIR/NAME.json")


def run(args: argparse.Namespace) -> int:
    out = check_output_folder(args.out)
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    with terminal_progress("train-fusion") as progress:
        if args.cohort:
            from napari_myelin.workflows.training_set import split_by_subject, user_cohort

            subjects = user_cohort(args.cohort)
            train, val = split_by_subject(subjects, args.val_fraction, args.seed)
            data = {"source": "user cohort", "table": str(args.cohort)}
            vs = subjects[0].meta["voxel_size_mm"]
        else:
            from napari_myelin.workflows.training_set import ESTIMATORS_NOTE, build_training_set

            tr_seeds, va_seeds = _seeds(args.train_seeds), _seeds(args.val_seeds)
            if set(tr_seeds) & set(va_seeds):
                raise InputError("--val-seeds: overlaps --train-seeds; validation subjects must never be trained on.")
            snrs = [float(s) for s in args.snrs.split(",")]
            kw = {"size": args.size, "snrs": snrs, "mode": args.mode, "preset": args.preset, "cache_dir": args.cache}
            train = build_training_set(tr_seeds, progress=subrange(progress, 0.0, 0.15), **kw)
            val = build_training_set(va_seeds, progress=subrange(progress, 0.15, 0.2), **kw)
            data = {"source": "phantom", "mode": args.mode, "size": args.size, "train_seeds": tr_seeds,
                    "validation_seeds": va_seeds, "snrs": snrs}
            if args.mode == "estimators":
                data["registration_preset"] = args.preset
                data["note"] = ESTIMATORS_NOTE
            if args.mode == "simulated":
                from napari_myelin.workflows.training_set import SIMULATED_NOTE

                data["note"] = SIMULATED_NOTE
            vs = train[0].meta["voxel_size_mm"]
        model, hist = train_fusion(
            train, val, channels=channels, width=args.width, epochs=args.epochs, steps_per_epoch=args.steps,
            batch_size=args.batch, patch=args.patch, lr=args.lr, patience=args.patience, seed=args.seed,
            lesion_weight=args.lesion_weight, lesion_patch_fraction=args.lesion_patches,
            region_weight=args.region_weight, skip_sigma=args.skip_sigma,
            max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
            voxel_size_mm=vs, checkpoint_dir=Path(out) / "checkpoint", resume=args.resume, training_data=data,
            progress=subrange(progress, 0.2, 1.0),
        )
    path = save_model(model, Path(out) / f"{args.name}.safetensors")
    print(f"wrote {path} and {path.with_suffix('.json')}: validation WM RMSE {model.card['metrics']['validation_wm_rmse_percent']:.2f} % "
          f"after {len(hist['val_rmse'])} epochs ({hist['seconds']:.0f} s)")
    return 0

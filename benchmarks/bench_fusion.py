"""Fusion CNN: held-out phantoms (new against previous weights) and the independent simulator's frozen subjects.

**Phantom** (default): for every held-out seed (>= 1000, never used in training or validation; lesions + NAWM
demyelination on odd seeds) the inputs are made exactly as for training (``napari_myelin.workflows.training_set``,
``mode="estimators"``): the project's estimators (``reconst.mwf``, ``reconst.dki``, ``reconst.qpm``,
``reconst.qsm``, ``reconst.mtsat``, ``reconst.chisep``) run on the phantom's simulated acquisitions and the maps
are brought to the 2 mm MNI template by the subject pipeline's registrations; the true MWF follows the
reference's transform. Compared with the true MWF in white matter (WM fraction > 0.5): MWF alone, the
regression baselines of the model card (fitted on the training subjects), the previous weights (card format 2:
MWF, FA, MK, QPM, QSM; ``--previous``) and the new weights with every presence pattern of the optional inputs
that matters (all, without MTsat and chi_dia, without any optional map, MTsat only, chi_dia only).

**Independent simulator** (``--independent``): the frozen test subjects
(:data:`napari_myelin.sims.independent.FROZEN_TEST_SEEDS`, size small, never used to choose anything) processed
by the same estimators and registrations (:func:`~napari_myelin.workflows.training_set.independent_subject_arrays`).
Compared: MWF alone, linear fusion of the same inputs (card coefficients), the **atlas prior** (the mean true
MWF of the weights' full-size training subjects in template space: an estimate that ignores the images; the
evaluation is on the template grid, where the subject's truth arrives by the subject's own warp, which is the
prior brought to the subject by the inverse warp up to interpolation), the previous weights and the new ones.

Columns: WM RMSE pooled over subjects, WM mean error, worst and mean tract-mean error (tracts >= 10 voxels,
lesions excluded), lesion and NAWM deficit errors (``|estimated - true| / true`` of the contrast normal WM minus
region, mean over the subjects that have it) and the estimated deficits themselves (mean over those subjects; the
true ones are printed below the table). All in MWF percentage points.

Usage::

    python benchmarks/bench_fusion.py --size full --seeds 1000,1001,1003 --cache DIR [--timing]
    python benchmarks/bench_fusion.py --independent --cache DIR

Processed subjects are cached in ``--cache`` (minutes each the first time).
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
from napari_myelin.workflows.training_set import arrays_subject, build_training_set, estimator_subject_arrays

PREVIOUS = Path(__file__).resolve().parent / "weights" / "fusion_0.2.safetensors"
OPTIONAL = ("qsm", "mtsat", "chi_dia")
#: Presence patterns of the new weights' optional inputs reported: label -> optional maps given.
PATTERNS = {"all inputs": OPTIONAL, "without MTsat, chi_dia": ("qsm",), "no optional input": (),
            "+ MTsat only": ("mtsat",), "+ chi_dia only": ("chi_dia",)}


def cnn(model, s, optional) -> np.ndarray:
    """The CNN's integrated MWF (%) with the optional maps ``optional`` (those the card reads and ``s`` has)."""
    given = {c: s.inputs[c] for c in optional if c in model.channels and c in s.inputs}
    return fuse(s.inputs["mwf"], s.inputs["fa"], s.inputs["mk"], s.inputs["qpm"], **given, weights=model,
                mask=s.mask, voxel_size_mm=s.meta["voxel_size_mm"])["imwf"]


def regression(b: dict, s) -> np.ndarray:
    """A regression baseline of the model card (MWF %) on ``s`` (NaN where ``s`` lacks one of its maps)."""
    if not all(c in s.inputs for c in b["channels"]):
        return np.full(s.mask.shape, np.nan)
    return apply_regression(s.inputs, b["coefficients"], b["channels"], b["quadratic"], mask=s.mask)


def table(rows: dict[str, list[dict]]) -> None:
    """Print the markdown table of per-subject metrics ``rows`` (method -> one dict per subject)."""
    def agg(m, key, f=np.mean):
        vals = [r[key] for r in rows[m] if key in r]
        return f(vals) if vals else float("nan")

    print("| method | WM RMSE | WM mean error | worst tract-mean error | mean tract-mean error | lesion deficit error "
          "| lesion deficit | NAWM deficit error | NAWM deficit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, rs in rows.items():
        rmse = float(np.sqrt(np.mean([r["wm_rmse"] ** 2 for r in rs])))
        print(f"| {m} | {rmse:.2f} | {agg(m, 'wm_bias'):+.2f} | {agg(m, 'tract_mean_abs_error_max', np.max):.2f} | "
              f"{agg(m, 'tract_mean_abs_error_mean'):.2f} | {100 * agg(m, 'lesion_deficit_rel_error'):.0f} % | "
              f"{agg(m, 'lesion_deficit_est'):.2f} | {100 * agg(m, 'nawm_deficit_rel_error'):.0f} % | "
              f"{agg(m, 'nawm_deficit_est'):.2f} |")
    first = next(iter(rows.values()))
    print(f"true deficits (mean over subjects): lesion {agg(next(iter(rows)), 'lesion_deficit_true'):.2f} points "
          f"({sum('lesion_deficit_true' in r for r in first)} subjects), NAWM "
          f"{agg(next(iter(rows)), 'nawm_deficit_true'):.2f} points ({sum('nawm_deficit_true' in r for r in first)})")


def evaluate(subjects, methods) -> dict[str, list[dict]]:
    """Per-subject metrics of every method (``name -> callable(subject) -> MWF %``)."""
    rows = {m: [] for m in methods}
    for s in subjects:
        for m, f in methods.items():
            pred = f(s)
            r = subject_metrics(pred, s)
            r["wm_bias"] = float(np.mean(pred[s.wm] - 100 * s.target[s.wm]))
            rows[m].append(r)
    return rows


def _methods(new, old, extra=None) -> dict:
    """Baselines, previous weights and the new weights' presence patterns as callables of a subject."""
    methods = {"MWF alone": lambda s: 100.0 * s.inputs["mwf"]}
    for name, b in new.card.get("baselines", {}).items():
        methods[name] = lambda s, b=b: regression(b, s)
    methods.update(extra or {})
    methods["CNN previous weights (0.2: MWF, FA, MK, QPM, QSM)"] = lambda s: cnn(old, s, ("qsm",))
    for label, opt in PATTERNS.items():
        methods[f"CNN new weights, {label}"] = lambda s, o=opt: cnn(new, s, o)
    return methods


def atlas_prior(model, cache) -> np.ndarray:
    """Mean true MWF (%) of the model's full-size training subjects on the template grid (cached arrays)."""
    data = model.card["training"]["data"]
    targets = []
    for seed in data["train_seeds_full"]:
        t = estimator_subject_arrays(int(seed), size="full", snr=float(data["train_snrs_full"][str(seed)]),
                                     lesions=int(seed) % 2 == 1, preset=data.get("registration_preset", "fast"),
                                     cache_dir=cache)
        targets.append(100.0 * t["target"])
    return np.mean(targets, axis=0)


def independent(args, new, old) -> None:
    """The table on the independent simulator's frozen subjects."""
    from napari_myelin.sims.independent import FROZEN_TEST_SEEDS
    from napari_myelin.workflows.training_set import independent_subject_arrays

    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else list(FROZEN_TEST_SEEDS)
    prior = atlas_prior(new, args.cache)
    subjects = [arrays_subject(independent_subject_arrays(s, size="small", cache_dir=args.cache),
                               f"independent-seed{s}", meta={"seed": s}) for s in seeds]
    have = sorted({c for s in subjects for c in s.inputs})
    print(f"independent simulator, frozen seeds {seeds} (size small, default SNRs; real estimators + registration "
          f"to the 2 mm template), maps {have}, {sum(int(s.wm.sum()) for s in subjects)} WM voxels")
    extra = {"atlas prior (phantom training cohort mean, ignores the images)": lambda s: np.where(s.mask, prior, 0.0)}
    table(evaluate(subjects, _methods(new, old, extra)))


def phantom(args, new, old) -> None:
    """The table on held-out phantoms, and optionally the inference time."""
    seeds = [int(x) for x in args.seeds.split(",")]
    data = new.card["training"]["data"]
    seen = set(data.get("train_seeds", [])) | set(data.get("validation_seeds", []))
    if seen & set(seeds):
        raise SystemExit(f"seeds {sorted(seen & set(seeds))} were used in training/validation; pick held-out seeds")
    subjects = build_training_set(seeds, size=args.size, snrs=[args.snr], mode="estimators", preset=args.preset,
                                  cache_dir=args.cache)
    print(f"held-out phantom seeds {seeds} (size {args.size}, SNR {args.snr:g}, real estimators + registration to "
          f"the 2 mm template), {sum(int(s.wm.sum()) for s in subjects)} WM voxels")
    table(evaluate(subjects, _methods(new, old)))
    if args.timing:
        timing(new, subjects[0], args.threads)


def timing(model, s, threads: int) -> None:
    """Inference time of the CNN (8 MC-dropout samples, every input) against the quadratic QPM (numpy)."""
    given = {c: s.inputs[c] for c in OPTIONAL if c in model.channels}
    fuse(s.inputs["mwf"], s.inputs["fa"], s.inputs["mk"], s.inputs["qpm"], **given, weights=model, mask=s.mask,
         n_samples=1)  # warm-up
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fuse(s.inputs["mwf"], s.inputs["fa"], s.inputs["mk"], s.inputs["qpm"], **given, weights=model, mask=s.mask,
             voxel_size_mm=2.0)
        times.append(time.perf_counter() - t)
    q = model.card["baselines"]["quadratic_qpm"]
    t = time.perf_counter()
    apply_regression(s.inputs, q["coefficients"], q["channels"], q["quadratic"], mask=s.mask)
    t_peer = time.perf_counter() - t
    print(f"inference on a {'x'.join(map(str, s.mask.shape))} template volume, {threads} threads: CNN (8 MC-dropout "
          f"samples) {np.median(times):.2f} s; quadratic QPM (numpy) {t_peer:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--independent", action="store_true", help="the independent simulator's frozen subjects")
    ap.add_argument("--seeds", default=None, help="default: 1000,1001,1003 (phantom) / FROZEN_TEST_SEEDS")
    ap.add_argument("--snr", type=float, default=200.0)
    ap.add_argument("--size", default="full", choices=["small", "full"])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "napari-myelin" / "fusion-estimators"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None, help="new weights (default: the shipped ones)")
    ap.add_argument("--previous", default=str(PREVIOUS), help="previous weights (card format 2)")
    ap.add_argument("--timing", action="store_true", help="also time the inference")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    new, old = load_model(args.weights), load_model(args.previous)
    if args.independent:
        independent(args, new, old)
    else:
        args.seeds = args.seeds or "1000,1001,1003"
        phantom(args, new, old)


if __name__ == "__main__":
    main()

"""Normative models on a synthetic cohort: calibration on healthy controls, sensitivity on patients.

Three stages, run in order (each reads what the previous one wrote under ``--work``)::

    python benchmarks/bench_normative.py data        # simulate the cohort, run it through `cohort`
    python benchmarks/bench_normative.py calibrate   # leave-one-out flags on the healthy controls
    python benchmarks/bench_normative.py sensitivity # model of all controls -> patients: tracts and voxels

**data**: ``--controls`` healthy phantom subjects (seeds 2000, 2001, ...; between-subject variation:
pose, smooth deformation, +-5 % tract myelin, B1, noise) and ``--patients`` phantom subjects with
lesions and one NAWM tract with MWF reduced by 25 % (seeds 3000, 3001, ...), written into one BIDS
root with a ``participants.tsv`` (age, sex, site, group drawn from a generator seeded 17 -- the
phantom has no age, sex or site effect, so the covariates exercise the machinery and cost degrees
of freedom); every subject goes through :func:`napari_myelin.workflows.cohort.run_cohort`.
None of these seeds was used to build, tune or test anything else.

**calibrate**: for each control, a tract model (covariates age, sex, site) is built from the other
controls and the held-out control is scored; the fraction of held-out controls with any
FDR-significant tract flag per map (target <= 5 %), and the fraction of flagged rows (target <= 5 %).

**sensitivity**: the model of every control (tract and voxelwise) scores each patient; tract-level
sensitivity on the MWF flags of tracts whose true MWF deficit is >= 20 % (target >= 80 %), and voxel
ROC AUC of the abnormality score for lesion voxels and NAWM-deficit voxels against normal WM (targets
0.90 and 0.75), with the ROC curves in ``--png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

CONTROL_SEED, PATIENT_SEED = 2000, 3000
PARTICIPANT_SEED = 17


def write_cohort(bids: Path, controls: int, patients: int, size: str) -> pd.DataFrame:
    """Simulate the subjects (skipping those already written) and write participants.tsv."""
    from napari_myelin.sims.phantom import write_phantom

    rng = np.random.default_rng(PARTICIPANT_SEED)
    rows = []
    for i in range(controls + patients):
        patient = i >= controls
        seed = PATIENT_SEED + i - controls if patient else CONTROL_SEED + i
        rows.append({"participant_id": f"sub-{seed:02d}", "age": int(rng.integers(20, 71)),
                     "sex": str(rng.choice(["F", "M"])), "site": str(rng.choice(["A", "B"])),
                     "group": "patient" if patient else "control", "seed": seed})
        if not (bids / f"sub-{seed:02d}").is_dir():
            t0 = time.perf_counter()
            write_phantom(bids, seed=seed, size=size, snr=200.0, lesions=patient)
            print(f"simulated sub-{seed:02d} ({'patient' if patient else 'control'}) in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    table.drop(columns="seed").to_csv(bids / "participants.tsv", sep="\t", index=False)
    return table


def stage_data(args) -> None:
    from napari_myelin.workflows.cohort import run_cohort

    bids, deriv = args.work / "bids", args.work / "deriv"
    bids.mkdir(parents=True, exist_ok=True)
    write_cohort(bids, args.controls, args.patients, args.size)
    t0 = time.perf_counter()
    result = run_cohort(bids, deriv, workers=args.workers, threads_per_worker=args.threads, preset="fast",
                        report=print)
    print(f"cohort: {len(result.subjects)} subjects, failed {result.failed}, "
          f"{time.perf_counter() - t0:.0f} s wall", flush=True)


def _controls(args):
    from napari_myelin.workflows.cohort_group import read_participants

    table = read_participants(args.work / "bids" / "participants.tsv")
    done = table[table["subject"].map(lambda s: (args.work / "deriv" / s / "tracts.csv").is_file())]
    return table, done[done["group"] == "control"]["subject"].tolist(), done[done["group"] == "patient"]["subject"].tolist()


def stage_calibrate(args) -> None:
    """Leave-one-out: a tract model of the other controls scores each held-out control."""
    from napari_myelin.workflows.normative import build_normative_model, score_subject_folder, subject_covariates

    participants, controls, _ = _controls(args)
    tsv = args.work / "bids" / "participants.tsv"
    rows = []
    for c in controls:
        model = build_normative_model(args.work / "deriv", args.work / "loo" / c, participants=tsv,
                                      controls=f"group == 'control' and subject != '{c}'",
                                      covariates=["age", "sex", "site"], voxelwise=False)
        scores = score_subject_folder(args.work / "deriv" / c, model, subject_covariates(c, None, tsv))
        rows.append(scores.rows)
    table = pd.concat(rows, ignore_index=True)
    ok = table[table["z"].notna()]
    per_map = ok.groupby(["map", "subject"])["abnormal"].any().groupby("map").mean()
    print(f"leave-one-out over {len(controls)} healthy controls (tract model: age, sex, site)")
    print(per_map.rename("held-out controls with any FDR flag").to_string(float_format=lambda v: f"{100 * v:.1f} %"))
    print(f"rows flagged: {100 * ok['abnormal'].mean():.2f} % of {len(ok)}; worst map {100 * per_map.max():.1f} %; "
          f"tracts with D flagged: {100 * ok.drop_duplicates(['subject', 'label'])['D_abnormal'].mean():.2f} %")
    table.to_csv(args.work / "calibration_rows.csv", index=False)


def _truth(args, subject: str, name: str, grid: str) -> np.ndarray:
    from napari_myelin.io.volume import load_volume

    return np.asarray(load_volume(args.work / "bids" / "derivatives" / "truth" / subject / grid / f"{name}.nii.gz").data)


def _tract_deficits(args, subject: str) -> pd.Series:
    """True relative MWF deficit per tract: 1 - sum(mwf) / sum(mwf without pathology) over the MESE-grid truth
    labels; the healthy MWF is mwf / ((1 - 0.8 lesion)(1 - r nawm)) (myelin scaling of the phantom)."""
    mwf, labels = _truth(args, subject, "mwf", "mese"), _truth(args, subject, "labels", "mese").astype(int)
    scale = (1 - 0.8 * _truth(args, subject, "lesion", "mese")) * (1 - 0.25 * _truth(args, subject, "nawm_demyelination", "mese"))
    healthy = np.where(scale > 0, mwf / np.maximum(scale, 1e-6), 0)
    lost = np.bincount(labels.ravel(), weights=(healthy - mwf).ravel())
    total = np.bincount(labels.ravel(), weights=healthy.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(lost / total).iloc[1:]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg).statistic / (pos.size * neg.size))


def stage_sensitivity(args) -> None:
    """Model of every control -> each patient: tract sensitivity and voxel ROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_myelin.workflows.abnormality import abnormality_map
    from napari_myelin.workflows.normative import build_normative_model, score_subject_folder, subject_covariates

    _, controls, patients = _controls(args)
    tsv = args.work / "bids" / "participants.tsv"
    model = build_normative_model(args.work / "deriv", args.work / "model", participants=tsv,
                                  controls="group == 'control'", covariates=["age", "sex", "site"])
    hits, scores = [], {"lesion": ([], []), "nawm": ([], [])}
    for p in patients:
        rows = score_subject_folder(args.work / "deriv" / p, model, subject_covariates(p, None, tsv)).rows
        mwf = rows[rows["map"] == "mwf"].set_index("label")
        deficit = _tract_deficits(args, p)
        big = [lab for lab in mwf.index if lab in deficit.index and deficit[lab] >= 0.2]
        hits += [bool(mwf.loc[lab, "abnormal"]) for lab in big]
        result = abnormality_map(args.work / "deriv" / p, model, subject_covariates(p, None, tsv), write=False)
        lesion, nawm = _truth(args, p, "lesion", "spgr"), _truth(args, p, "nawm_demyelination", "spgr")
        wm = _truth(args, p, "wm", "spgr") >= 0.5
        a = result.score
        normal = wm & (lesion < 0.05) & (nawm < 0.05) & np.isfinite(a)
        for kind, mask in (("lesion", (lesion >= 0.5) & np.isfinite(a)), ("nawm", (nawm >= 0.5) & np.isfinite(a))):
            scores[kind][0].append(a[mask])
            scores[kind][1].append(a[normal])
    print(f"tract sensitivity (MWF flag, FDR 5 %) for tracts with >= 20 % true MWF deficit: "
          f"{sum(hits)} of {len(hits)} = {100 * np.mean(hits):.0f} %")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for kind, (pos, neg) in scores.items():
        pos, neg = np.concatenate(pos), np.concatenate(neg)
        thresholds = np.quantile(np.r_[pos, neg], np.linspace(1, 0, 201))
        tpr = [(pos >= t).mean() for t in thresholds]
        fpr = [(neg >= t).mean() for t in thresholds]
        auc = _auc(pos, neg)
        print(f"voxel ROC AUC, {kind}: {auc:.3f} ({pos.size} positive, {neg.size} normal-WM voxels)")
        ax.plot(fpr, tpr, label=f"{kind} (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false-positive rate (normal WM)", ylabel="true-positive rate",
           title=f"abnormality score, {len(patients)} patients")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"wrote {args.png}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("data", "calibrate", "sensitivity"))
    parser.add_argument("--work", type=Path, default=Path("bench_normative"), help="working folder")
    parser.add_argument("--controls", type=int, default=24)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", type=Path, default=Path("docs/images/normative_roc.png"))
    args = parser.parse_args(argv)
    {"data": stage_data, "calibrate": stage_calibrate, "sensitivity": stage_sensitivity}[args.stage](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

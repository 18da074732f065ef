"""Normative models on a synthetic cohort: calibration on healthy controls, sensitivity on patients.

Three stages, run in order (each reads what the previous one wrote under ``--work``)::

    python benchmarks/bench_normative.py data        # simulate the cohort, run it through `cohort`
    python benchmarks/bench_normative.py calibrate   # leave-one-out flags on the healthy controls
    python benchmarks/bench_normative.py sensitivity # model of all controls -> patients: tracts and voxels

**data**: ``--controls`` healthy subjects and ``--patients`` subjects with lesions and NAWM deficits,
written into one BIDS root with a ``participants.tsv`` (age, sex, site, group drawn from a generator
seeded 17 -- neither simulator has an age, sex or site effect, so the covariates exercise the
machinery and cost degrees of freedom); every subject goes through
:func:`napari_myelin.workflows.cohort.run_cohort`. ``--simulator independent`` (default) uses the
independent simulator (:mod:`napari_myelin.sims.independent`: tract MWF from a population
distribution, atrophy, head size and pose, lesions and NAWM deficits drawn per subject): controls are
the seeds from 2000 up whose draw has no pathology, patients the seeds from 3000 up whose draw has
lesions (the simulator decides with probability 0.6; the choice reads the seed's anatomy stream only,
:func:`independent_anatomy`). ``--simulator phantom``: project phantoms (seeds 2000, 2001, ...;
pose, smooth deformation, +-5 % tract myelin, B1, noise) and phantoms with lesions and one NAWM
tract with MWF reduced by 25 % (seeds 3000, ...). None of these seeds (nor the simulator's frozen
test seeds) was used to build, tune or test anything else.

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


def independent_anatomy(seed: int) -> dict:
    """The template-space anatomy the independent simulator draws for ``seed`` (its anatomy stream:
    ``SeedSequence([seed, 16])``'s first child, :mod:`napari_myelin.sims.independent.subject`)."""
    from napari_myelin.sims.independent.anatomy import draw_anatomy

    return draw_anatomy(np.random.default_rng(np.random.SeedSequence([seed, 16]).spawn(1)[0]))


def _seeds(simulator: str, controls: int, patients: int) -> list[tuple[int, bool]]:
    """(seed, patient) of every subject: consecutive seeds, or for the independent simulator the first
    seeds from 2000 (3000) whose drawn anatomy has no pathology (has lesions)."""
    if simulator == "phantom":
        return [(CONTROL_SEED + i, False) for i in range(controls)] + [(PATIENT_SEED + i, True) for i in range(patients)]
    out = []
    for start, n, patient in ((CONTROL_SEED, controls, False), (PATIENT_SEED, patients, True)):
        seed = start
        while sum(p == patient for _, p in out) < n:
            if independent_anatomy(seed)["parameters"]["has_lesions"] == patient:
                out.append((seed, patient))
            seed += 1
    return out


def _simulate(job) -> str:
    """Write one subject (a process of the pool): ``job`` = (bids, seed, patient, simulator, size)."""
    bids, seed, patient, simulator, size = job
    t0 = time.perf_counter()
    if simulator == "phantom":
        from napari_myelin.sims.phantom import write_phantom

        write_phantom(bids, seed=seed, size=size, snr=200.0, lesions=patient)
    else:
        import json

        from napari_myelin.sims.independent import write_independent_subject

        write_independent_subject(bids, seed=seed, size=size)
        drawn = json.loads((bids / "derivatives" / "truth" / f"sub-{seed:02d}" / "simulation_parameters.json").read_text())
        if drawn["has_lesions"] != patient:
            raise RuntimeError(f"seed {seed}: the simulator's anatomy stream changed; the selection is stale")
    return f"simulated sub-{seed:02d} ({'patient' if patient else 'control'}) in {time.perf_counter() - t0:.1f} s"


def write_cohort(bids: Path, controls: int, patients: int, size: str, simulator: str = "independent",
                 processes: int = 1) -> pd.DataFrame:
    """Simulate the subjects (skipping those already written) and write participants.tsv."""
    from concurrent.futures import ProcessPoolExecutor

    import json

    rng = np.random.default_rng(PARTICIPANT_SEED)
    rows, jobs = [], []
    cache = bids.parent / "seeds.json"  # the selection, kept (it draws the anatomy of every candidate seed)
    key = {"simulator": simulator, "controls": controls, "patients": patients}
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    if {k: stored.get(k) for k in key} != key:
        stored = dict(key, seeds=_seeds(simulator, controls, patients))
        cache.write_text(json.dumps(stored), encoding="utf-8")
    for seed, patient in stored["seeds"]:
        rows.append({"participant_id": f"sub-{seed:02d}", "age": int(rng.integers(20, 71)),
                     "sex": str(rng.choice(["F", "M"])), "site": str(rng.choice(["A", "B"])),
                     "group": "patient" if patient else "control", "seed": seed})
        if not (bids / f"sub-{seed:02d}").is_dir():
            jobs.append((bids, seed, patient, simulator, size))
    with ProcessPoolExecutor(max(1, processes)) as pool:
        for line in pool.map(_simulate, jobs):
            print(line, flush=True)
    table = pd.DataFrame(rows)
    table.drop(columns="seed").to_csv(bids / "participants.tsv", sep="\t", index=False)
    (bids.parent / "simulator.txt").write_text(simulator, encoding="utf-8")
    return table


def stage_data(args) -> None:
    from napari_myelin.workflows.cohort import run_cohort

    bids, deriv = args.work / "bids", args.work / "deriv"
    bids.mkdir(parents=True, exist_ok=True)
    write_cohort(bids, args.controls, args.patients, args.size, args.simulator, args.workers)
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
    (args.work / "loo").mkdir(exist_ok=True)
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
    anywhere = ok.groupby("subject")["abnormal"].any().mean()
    print(f"held-out controls with any FDR flag in any of the {ok['map'].nunique()} maps: {100 * anywhere:.1f} %")
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


def _simulator(args) -> str:
    path = args.work / "simulator.txt"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else "phantom"


def _independent_deficits(args, subject: str) -> tuple[pd.Series, list[int]]:
    """Independent simulator: true relative MWF deficit of each tract's white matter, and the labels of the
    tracts with an extra NAWM deficit.

    From the subject's template-space anatomy (:func:`independent_anatomy`), over the template voxels of tract
    ``l``: MWF = sum(myelin water) / sum(water) of the WM classes (NAWM: water ``f_nawm pd_wm``, MWF
    ``mwf_wm``; lesion: water ``f_les (pd_wm + dPD s)``, MWF ``mwf_wm (1 - s)``), against the same without
    pathology (``mwf_wm / (1 - nawm)``, water ``(f_nawm + f_les) pd_wm``); deficit = 1 - MWF / healthy MWF.
    """
    import json

    seed = int(subject.split("-")[1])
    a = independent_anatomy(seed)
    drawn = json.loads((args.work / "bids" / "derivatives" / "truth" / subject / "simulation_parameters.json").read_text())
    pd_wm, dpd = drawn["tissue"]["pd_wm"], drawn["tissue"]["lesion_pd_increase"]
    f_n, f_l, sev = a["f_nawm"].astype(float), a["f_les"].astype(float), a["severity"].astype(float)
    mwf, nawm = a["mwf_wm"].astype(float), a["nawm"].astype(float)
    healthy = np.where(nawm < 1, mwf / np.maximum(1 - nawm, 1e-6), 0.0)
    w_n, w_l = f_n * pd_wm, f_l * (pd_wm + dpd * sev)
    labels = a["labels"].astype(int).ravel()

    def per_tract(values):
        return np.bincount(labels, weights=values.ravel(), minlength=labels.max() + 1)

    with np.errstate(invalid="ignore", divide="ignore"):
        actual = per_tract(w_n * mwf + w_l * mwf * (1 - sev)) / per_tract(w_n + w_l)
        normal = per_tract((f_n + f_l) * pd_wm * healthy) / per_tract((f_n + f_l) * pd_wm)
        deficit = pd.Series(1 - actual / normal).iloc[1:]
    lut = a["lut"].set_index("abbreviation")["index"]
    return deficit, [int(lut[t["tract"]]) for t in drawn["nawm_tracts"]]


def _voxel_classes(args, subject: str, score: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Positive and negative voxels (reference grid = the SPGR/VFA grid) of each kind: lesion voxels, and NAWM-deficit
    voxels (phantom: its 25 % NAWM tract; independent simulator: WM of the tracts with an extra NAWM deficit),
    against the normal-appearing WM (phantom: no pathology; independent: the other WM outside lesions, which
    carries the subject's global NAWM deficit of 0-12 %)."""
    lesion = _truth(args, subject, "lesion", "spgr") >= 0.5
    wm = (_truth(args, subject, "wm", "spgr") >= 0.5) & np.isfinite(score)
    if _simulator(args) == "phantom":
        nawm = _truth(args, subject, "nawm_demyelination", "spgr") >= 0.5
        normal = wm & ~lesion & ~nawm & (_truth(args, subject, "lesion", "spgr") < 0.05)
    else:
        _, tracts = _independent_deficits(args, subject)
        labels = _truth(args, subject, "labels", "spgr").astype(int)
        nawm = wm & ~lesion & np.isin(labels, tracts)
        normal = wm & ~lesion & ~nawm
    return {"lesion": (score[lesion & np.isfinite(score)], score[normal]), "nawm": (score[nawm & wm], score[normal])}


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
        deficit = _tract_deficits(args, p) if _simulator(args) == "phantom" else _independent_deficits(args, p)[0]
        big = [lab for lab in mwf.index if lab in deficit.index and deficit[lab] >= 0.2]
        hits += [bool(mwf.loc[lab, "abnormal"]) for lab in big]
        print(f"{p}: tracts with >= 20 % MWF deficit {big}, flagged {[lab for lab in big if mwf.loc[lab, 'abnormal']]}",
              flush=True)
        result = abnormality_map(args.work / "deriv" / p, model, subject_covariates(p, None, tsv), write=False)
        for kind, (pos, neg) in _voxel_classes(args, p, result.score).items():
            scores[kind][0].append(pos)
            scores[kind][1].append(neg)
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
    parser.add_argument("--simulator", choices=("independent", "phantom"), default="independent",
                        help="data stage: the independent simulator (default) or the project phantom")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", type=Path, default=Path("docs/images/normative_roc.png"))
    args = parser.parse_args(argv)
    {"data": stage_data, "calibrate": stage_calibrate, "sensitivity": stage_sensitivity}[args.stage](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

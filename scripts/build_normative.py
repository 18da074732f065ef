"""Build the shipped SYNTHETIC normative table from healthy digital-phantom subjects.

For each seed a healthy phantom subject is simulated (:func:`napari_myelin.sims.phantom.make_phantom`,
``lesions=False``): its pose, deformation and per-tract myelin (+-5 % relative per tract and
subject, which propagates to FA/MD/kurtosis, susceptibility and T1) differ between seeds. The tract
statistics of its *truth maps* are computed on each acquisition's grid with that grid's tract
labels (exactly what ``napari-myelin stats --labels tracts --map ...`` does for a subject whose maps
and labels share a grid): MWF from the multi-echo spin echo grid, FA/MD/AD/RD/MK/AK/RK from the
DWI grid, chi from the GRE grid, T1 from the SPGR grid. Then
:func:`napari_myelin.stats.normative.build_normative` pools the subjects' tract means into mean and
SD per tract and map.

Usage::

    python scripts/build_normative.py --subjects 8 --size full \\
        --out src/napari_myelin/data/normative/normative_synthetic_phantom.csv

The table is synthetic: it describes the phantom population, not people. It exists so that the
normative workflow (z-scores, D, NAWM flags) can be demonstrated and tested end to end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from napari_myelin.stats.normative import build_normative
from napari_myelin.sims.phantom import make_phantom
from napari_myelin.stats.roi import read_stats_csv, roi_statistics, write_csv

#: modality -> (truth map name -> reported map name); units as the estimators report them.
MAPS = {
    "mese": {"mwf": "mwf"},
    "dwi": {"fa": "fa", "md": "md", "ad": "ad", "rd": "rd", "mk": "mk", "ak": "ak", "rk": "rk"},
    "gre": {"chi": "chi"},
    "spgr": {"t1": "t1"},
}
#: Between-subject coefficient of variation of healthy adults' tract means assumed for each map
#: (approximate literature values: MWF ~10 %, DTI/DKI 4-6 %, susceptibility ~20 %, T1 ~4 %).
#: The phantom varies only the tract myelin (+-5 %) between subjects, which leaves e.g. MD almost
#: constant (CV 0.2 %); without this added variation any estimator bias would be "abnormal".
BIOLOGICAL_CV = {"mwf": 0.10, "fa": 0.05, "md": 0.04, "ad": 0.04, "rd": 0.06, "mk": 0.05, "ak": 0.05,
                 "rk": 0.06, "chi": 0.20, "t1": 0.04}
SCALED = ("mean", "sd", "median", "q1", "q3", "iqr", "min", "max")

UNITS = {"mwf": "fraction", "fa": "fraction", "md": "mm^2/s", "ad": "mm^2/s", "rd": "mm^2/s",
         "mk": "dimensionless", "ak": "dimensionless", "rk": "dimensionless", "chi": "ppm", "t1": "s"}


def subject_table(seed: int, size: str, lesions: bool = False):
    """Long statistics table of one phantom subject's truth maps over its tract labels."""
    ph = make_phantom(seed=seed, size=size, snr=float("inf"), lesions=lesions)
    return phantom_table(ph, seed, size), ph


def phantom_table(ph, seed: int, size: str) -> pd.DataFrame:
    parts = []
    for modality, names in MAPS.items():
        truth = ph.truth[modality]
        maps = {out: truth[name] for name, out in names.items()}
        res = roi_statistics(
            truth["labels"], maps, lut=ph.lut, subject=f"phantom-{seed:03d}",
            units={k: UNITS[k] for k in maps},
            sources={k: f"make_phantom(seed={seed}, size={size!r}).truth[{modality!r}][{k!r}]" for k in maps},
            methods={k: "phantom ground truth" for k in maps},
        )
        parts.append(res.table)
    return pd.concat(parts, ignore_index=True)


def add_biological_variation(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Scale one subject's tract statistics by ``(1 + e_subject)(1 + e_tract)`` per map, with
    ``e ~ N(0, cv / sqrt(2))`` (:data:`BIOLOGICAL_CV`; half the variance shared by all tracts of the
    subject, half tract specific), drawn from ``seed``."""
    import numpy as np

    rng = np.random.default_rng([seed, 2024])
    table = table.copy()
    labels = np.sort(table["label"].unique())
    for name, cv in BIOLOGICAL_CV.items():
        rows = table["map"] == name
        s = cv / np.sqrt(2.0)
        factor_subject = 1.0 + s * rng.standard_normal()
        factor_tract = dict(zip(labels, 1.0 + s * rng.standard_normal(labels.size)))
        factor = factor_subject * table.loc[rows, "label"].map(factor_tract).to_numpy()
        for col in SCALED:
            table.loc[rows, col] = table.loc[rows, col].to_numpy() * (np.abs(factor) if col in ("sd", "iqr") else factor)
        table.loc[rows, "statistics"] = table.loc[rows, "statistics"] + f"; x synthetic between-subject variation (CV {cv:g})"
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=8, help="number of healthy phantom subjects")
    parser.add_argument("--first-seed", type=int, default=1000, help="seed of the first subject (then +1 ...)")
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--out", default="src/napari_myelin/data/normative/normative_synthetic_phantom.csv")
    parser.add_argument("--subject-tables", default=None, help="folder to keep each subject's statistics CSV")
    parser.add_argument("--from-tables", default=None, metavar="DIR",
                        help="reuse the subject CSVs of an earlier run (--subject-tables) instead of simulating")
    parser.add_argument("--no-variation", action="store_true",
                        help="do not add the synthetic between-subject variation (BIOLOGICAL_CV)")
    parser.add_argument("--validate", type=int, metavar="SEED", default=None,
                        help="only score a phantom subject WITH lesions (this seed) against --out and report the "
                        "flagged tracts")
    args = parser.parse_args(argv)
    if args.validate is not None:
        return validate(args.validate, args.size, args.out)
    tables = []
    for i in range(args.subjects):
        seed = args.first_seed + i
        t0 = time.time()
        if args.from_tables:
            table = read_stats_csv(Path(args.from_tables) / f"phantom-{seed:03d}_stats.csv")
        else:
            table, _ = subject_table(seed, args.size)
        if args.subject_tables and not args.from_tables:  # the phantom's own values, before added variation
            Path(args.subject_tables).mkdir(parents=True, exist_ok=True)
            write_csv(table, Path(args.subject_tables) / f"phantom-{seed:03d}_stats.csv")
        if not args.no_variation:
            table = add_biological_variation(table, seed)
        tables.append(table)
        print(f"subject {i + 1}/{args.subjects} (seed {seed}): {time.time() - t0:.0f} s", flush=True)
    source = (f"SYNTHETIC: truth maps of {args.subjects} healthy napari-myelin digital phantom subjects "
              f"(make_phantom size={args.size!r}, seeds {args.first_seed}..{args.first_seed + args.subjects - 1})"
              + ("" if args.no_variation else " with synthetic between-subject variation (scripts/build_normative.py "
                 "BIOLOGICAL_CV)") + "; not human data")
    norm = build_normative(tables, source=source)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(norm, out, layout="as-is")
    print(f"{out}: {norm['label'].nunique()} tracts x {norm['map'].nunique()} maps from {args.subjects} subjects")
    return 0


def validate(seed: int, size: str, normative_csv: str) -> int:
    """Score a lesioned phantom subject against the table: is the demyelinated NAWM tract flagged?"""
    import numpy as np

    from napari_myelin.stats.normative import compare_to_normative, read_normative

    table, ph = subject_table(seed, size, lesions=True)
    norm = read_normative(normative_csv)
    scored, dist = compare_to_normative(table, norm)
    mese = ph.truth["mese"]
    labels = mese["labels"].data
    nawm = np.bincount(labels[mese["nawm_demyelination"].data > 0], minlength=labels.max() + 1)
    lesion = np.bincount(labels[mese["lesion"].data > 0], minlength=labels.max() + 1)
    target = int(np.argmax(nawm[1:]) + 1)
    mwf = scored[scored["map"] == "mwf"].set_index("label")
    print(f"NAWM-demyelination tract: {target} {mwf.loc[target, 'name']}: MWF z = {mwf.loc[target, 'z']:.2f}, "
          f"D = {mwf.loc[target, 'D']:.2f}")
    flagged = mwf[mwf["abnormal"]]
    print(f"tracts with an MWF flag (FDR 5 %): {len(flagged)} of {int(mwf['z'].notna().sum())} "
          f"({int((lesion[flagged.index] > 0).sum())} of them contain lesion voxels)")
    for label, row in flagged.sort_values("z").iterrows():
        print(f"  {label:3d} {row['name']:<36} z = {row['z']:6.2f}  lesion voxels {int(lesion[label])}")
    healthy = mwf[(lesion[mwf.index] == 0) & (mwf.index != target)]
    print(f"tracts without lesion or NAWM change: {int(healthy['abnormal'].sum())} of "
          f"{int(healthy['z'].notna().sum())} flagged (false positives; at most 5 % of the flags expected)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

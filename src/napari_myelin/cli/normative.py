"""``napari-myelin normative``: normative models from the user's controls (``build``, ``info``) and tables.

Examples::

    napari-myelin normative build DERIV --controls "group == 'control'" --covariates age sex site --out MODEL
    napari-myelin normative info MODEL
    napari-myelin normative table sub-01_stats.csv sub-02_stats.csv --csv normative.csv   # the former command

``build`` reads ``DERIV/sub-XX/tracts.csv`` and the template-space maps of the controls selected in
participants.tsv (see :func:`napari_myelin.workflows.normative.build_normative_model`). ``table`` is what
``napari-myelin normative STATS.csv ... --csv OUT.csv`` did before models existed: mean and sample SD across
subjects of the ROI means, per label and map.
"""

from __future__ import annotations

import argparse

from napari_myelin.stats.normative import build_normative, load_stats_tables
from napari_myelin.stats.roi import write_csv
from napari_myelin.utils.errors import InputError
from ._common import terminal_progress

HELP = "normative models from your controls (build, info) and covariate-free normative tables (table)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    build = sub.add_parser("build", help="build a model from a derivatives folder and participants.tsv")
    build.add_argument("deriv", metavar="DERIV", help="derivatives of 'napari-myelin run' or 'cohort' (sub-XX folders)")
    build.add_argument("--out", required=True, metavar="MODEL", help="model folder to write")
    build.add_argument("--controls", metavar="QUERY",
                       help="the controls among participants.tsv's rows, e.g. \"group == 'control'\" (default: all)")
    build.add_argument("--covariates", nargs="*", metavar="NAME",
                       help="participants.tsv columns to model (default: age, sex, site when present; none: give "
                       "--covariates with no name)")
    build.add_argument("--participants", metavar="TSV", help="participants.tsv (default: in or beside DERIV)")
    build.add_argument("--fwhm", type=float, default=4.0, help="smoothing of the voxelwise model, mm (default 4)")
    build.add_argument("--no-voxelwise", action="store_true", help="tract model only")
    build.add_argument("--synthetic", action="store_true",
                       help="label the model SYNTHETIC (automatic for simulated controls)")
    build.add_argument("--name", help="name of the model in its outputs")
    build.add_argument("--backend", choices=("ols", "pcn"), default="ols",
                       help="tract model: ols, the closed-form Bayesian linear regression (default), or pcn, "
                       "PCNtoolkit's BLR (needs the extra: pip install 'napari-myelin[normative-pcn]')")
    build.set_defaults(_action=_build)
    info = sub.add_parser("info", help="print what a model holds and what it applies to")
    info.add_argument("model", metavar="MODEL")
    info.set_defaults(_action=_info)
    table = sub.add_parser("table", help="covariate-free normative table from stats CSVs (the former command)")
    table.add_argument("tables", nargs="+", metavar="STATS.csv", help="long-layout tables from 'napari-myelin stats'")
    table.add_argument("--csv", required=True, metavar="OUT.csv", help="normative table to write (folder must exist)")
    table.add_argument("--statistic", default="mean", choices=("mean", "median"),
                       help="per-subject ROI statistic that is pooled (default: mean)")
    table.add_argument("--source", default="", help="free text stored in the table's source column")
    table.add_argument("--min-subjects", type=int, default=2, help="drop rows with fewer subjects (default 2)")
    table.set_defaults(_action=_table)
    parser.set_defaults(_parser=parser)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "_action", None)
    if action is None:
        args._parser.print_help()
        return 2
    return action(args)


def _build(args: argparse.Namespace) -> int:
    from napari_myelin.workflows.normative import build_normative_model

    if args.fwhm < 0:
        raise InputError(f"--fwhm {args.fwhm}: give a smoothing of 0 mm or more.")
    with terminal_progress("normative") as progress:
        model = build_normative_model(args.deriv, args.out, controls=args.controls, covariates=args.covariates,
                                      participants=args.participants, voxelwise=not args.no_voxelwise,
                                      fwhm_mm=args.fwhm, synthetic=True if args.synthetic else None,
                                      name=args.name, backend=args.backend, progress=progress)
    _print_model(model)
    return 0


def _info(args: argparse.Namespace) -> int:
    from napari_myelin.workflows.normative import open_model

    _print_model(open_model(args.model))
    return 0


def _print_model(model) -> None:
    info = model.info
    controls = info.get("Controls", {})
    print(f"model: {model.label}  (ID {model.model_id}, format {info.get('FormatVersion')})")
    print(f"controls: {controls.get('N', '?')} ({controls.get('Query', '')}); atlas {info.get('Atlas', {}).get('Name', '?')}")
    for cov in model.design.covariates:
        span = f"{cov.low:g}-{cov.high:g}" if cov.kind == "numeric" else ", ".join(cov.levels)
        print(f"covariate {cov.name} ({cov.kind}): {span}")
    backend = info.get("Backend", {})
    if backend:
        print(f"backend: {backend.get('Name')} {backend.get('Version', '')}".rstrip())
    print(f"tract model: {model.tracts['label'].nunique()} tracts x {model.tracts['map'].nunique()} maps; "
          f"multivariate covariance for {len(model.covariance)} tracts")
    if model.voxelwise:
        print(f"voxelwise: {', '.join(model.voxelwise.get('Maps', []))} (FWHM {model.voxelwise.get('FWHM_mm')} mm)")


def _table(args: argparse.Namespace) -> int:
    if args.min_subjects < 2:
        raise InputError(f"--min-subjects {args.min_subjects}: an SD needs at least 2 subjects.")
    tables = load_stats_tables(args.tables)
    table = build_normative(tables, statistic=args.statistic, source=args.source, min_subjects=args.min_subjects)
    write_csv(table, args.csv, layout="as-is")
    print(f"{args.csv}: {table['label'].nunique()} labels x {table['map'].nunique()} maps from "
          f"{int(table['n_subjects'].max()) if len(table) else 0} subjects")
    return 0

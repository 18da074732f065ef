"""The subjects of a cohort and its group outputs: participants, group tables, template-space group maps.

Subjects are the ``sub-*`` folders of a BIDS root, each read by :func:`napari_myelin.io.bids.find_subject`
as ``napari-myelin run`` reads it. ``participants.tsv`` (BIDS: tab separated, ``participant_id`` then
covariates such as ``age``, ``sex``, ``group``, ``site``; ``n/a`` for a missing value) supplies the
covariates carried into the group tables.

The group step (:func:`write_group`) writes, under ``DERIV/group/``::

    tracts_long.csv    every subject's tracts.csv rows (one per subject, tract and map) with the covariates
                       after ``subject``: subject, <covariates>, label, name (the tract), map, units,
                       n_voxels, volume_mm3, n_used, mean, sd, median, q1, q3, iqr, min, max, ...
    tracts_wide.csv    one row per subject and tract: subject, <covariates>, label, name, n_voxels,
                       volume_mm3, then <map>_units, <map>_mean, <map>_sd, ... per map
    space-MNI152NLin2009aSym/mean_<map>.nii.gz, sd_<map>.nii.gz, n_<map>.nii.gz (+ JSON sidecars),
                       subjects.tsv, database.json  (the layout of :class:`napari_myelin.align.database.Database`,
                       readable with :func:`napari_myelin.align.database.load_database`)

The group maps are, voxel by voxel over the ``n(v)`` subjects with a finite, non-zero value (zero is
outside the warped brain), the mean and the sample standard deviation (``n - 1``; 0 where
``n(v) < 2``) of each template-space map the pipeline wrote (``mwf``, ``fa``, ``mk``, ``qpm_myelin``,
``chi``, ``imwf``, ``imwf_sd``), as :func:`napari_myelin.align.database.build_database` defines them.
They are accumulated one subject at a time (Welford's update), so memory stays three template-grid
arrays per map whatever the number of subjects (``build_database`` holds every subject's map at once);
in a cohort each map is one Dask task.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from napari_myelin.align.database import Database
from napari_myelin.io.resample import resample_to_grid
from napari_myelin.io.volume import Volume, check_output_folder, is_nifti, load_volume, strip_nifti_suffix
from napari_myelin.stats.tables import read_stats_csv, wide_table, write_csv
from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.pipeline import TEMPLATE_SPACE

#: Covariates placed first in the group tables when participants.tsv has them.
COVARIATES = ("age", "sex", "group", "site")
#: Template-space files of a subject that are not parameter maps.
NOT_GROUP_MAPS = ("reference",)


def find_subject_folders(bids_root: str | os.PathLike, subjects: Sequence[str] | None = None) -> list[Path]:
    """The ``sub-*`` folders of a BIDS root, sorted (only ``subjects`` when given).

    Parameters
    ----------
    bids_root : path
        BIDS dataset folder.
    subjects : sequence of str, optional
        Subject labels, with or without ``sub-`` (``sub-01`` or ``01``).

    Raises
    ------
    InputError
        The root is not a folder, holds no ``sub-*`` folder, or lacks a requested subject.
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give a BIDS root that holds sub-XX folders.")
    folders = {p.name: p for p in sorted(root.glob("sub-*")) if p.is_dir()}
    if not folders:
        raise InputError(f"{root}: holds no sub-XX folder; give a BIDS root (napari-myelin phantom writes one).")
    if not subjects:
        return list(folders.values())
    wanted = list(dict.fromkeys(s if s.startswith("sub-") else f"sub-{s}" for s in subjects))
    missing = [s for s in wanted if s not in folders]
    if missing:
        raise InputError(f"{root}: has no folder {', '.join(missing)}; --subjects takes names of its sub-XX folders.")
    return [folders[s] for s in wanted]


def read_participants(path: str | os.PathLike) -> pd.DataFrame:
    """The covariates of ``participants.tsv``: a ``subject`` column (``sub-XX``) then the others.

    ``age``, ``sex``, ``group`` and ``site`` come first when present; ``n/a`` is a missing value.

    Raises
    ------
    InputError
        The file is missing, not a tab-separated table, has no ``participant_id`` column or lists a
        participant twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: participants table not found; give the BIDS participants.tsv.")
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable tab-separated table ({type(exc).__name__}).") from None
    if "participant_id" not in table.columns:
        raise InputError(f"{path}: has no participant_id column; BIDS participants.tsv starts with participant_id.")
    ids = table.pop("participant_id").astype(str).map(lambda s: s if s.startswith("sub-") else f"sub-{s}")
    if ids.duplicated().any():
        raise InputError(f"{path}: lists {ids[ids.duplicated()].iloc[0]} twice; give one row per participant.")
    first = [c for c in COVARIATES if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    table.insert(0, "subject", ids.to_numpy())
    return table


def _with_covariates(table: pd.DataFrame, participants: pd.DataFrame | None) -> pd.DataFrame:
    """``table`` with the participants' covariates inserted after its ``subject`` column."""
    if participants is None or participants.shape[1] == 1:
        return table
    taken = set(table.columns) - {"subject"}
    participants = participants.rename(columns={c: f"participant_{c}" for c in participants.columns if c in taken})
    rest = [c for c in table.columns if c != "subject"]
    merged = table.merge(participants, on="subject", how="left")
    return merged[list(participants.columns) + rest]


def template_maps(subject_root: Path) -> dict[str, Path]:
    """Map name -> template-space map file of one subject's derivatives folder (``sub-XX/anat``)."""
    prefix = f"{subject_root.name}_space-{TEMPLATE_SPACE}_"
    found = {}
    for path in sorted((subject_root / "anat").glob(f"{prefix}*")):
        name = strip_nifti_suffix(path.name)[len(prefix):]
        if is_nifti(path) and name not in NOT_GROUP_MAPS and re.fullmatch(r"[a-z0-9_]+", name):
            found[name] = path
    return found


class _Accumulator:
    """Voxel-wise count, mean and sum of squared deviations of one map, one subject at a time."""

    def __init__(self, reference: Volume) -> None:
        self.reference = reference
        shape = reference.shape[:3]
        self.n = np.zeros(shape, np.int32)
        self.mean = np.zeros(shape)
        self.m2 = np.zeros(shape)
        self.units = str(reference.metadata.get("Units", ""))

    def add(self, vol: Volume) -> None:
        ref = self.reference
        if vol.shape[:3] == ref.shape[:3] and np.allclose(vol.affine, ref.affine, atol=1e-3):
            x = np.asarray(vol.data, dtype=float)
        else:
            x, _ = resample_to_grid(vol, ref.affine, ref.shape[:3], order=1, cval=np.nan)
        ok = np.isfinite(x) & (x != 0)
        self.n[ok] += 1
        delta = x[ok] - self.mean[ok]
        self.mean[ok] += delta / self.n[ok]
        self.m2[ok] += delta * (x[ok] - self.mean[ok])

    def sd(self) -> np.ndarray:
        return np.sqrt(np.divide(self.m2, self.n - 1, out=np.zeros(self.n.shape), where=self.n > 1))


def map_statistics(paths: Sequence[Path]) -> _Accumulator | None:
    """Voxel-wise count, mean and SD of one map over its files (one per subject, in order); ``None``
    when none of them is 3D."""
    acc = None
    for path in paths:
        vol = load_volume(path)
        if vol.data.ndim == 3:
            acc = acc or _Accumulator(vol)
            acc.add(vol)
    return acc


def group_maps(subject_roots: Sequence[Path], folder: Path, mapper: Callable = map) -> list[Path]:
    """Voxel-wise mean, SD and n of every template-space map over the subjects, saved in ``folder``.

    ``mapper(func, items)`` applies :func:`map_statistics` to each map's files: the built-in ``map``
    (one map after the other) or, in a cohort, one Dask task per map. Returns the files written (none
    when no subject has template-space maps).
    """
    files: dict[str, list[Path]] = {}
    contributions: dict[str, list[str]] = {}
    for root in subject_roots:
        maps = template_maps(root)
        contributions[root.name] = list(maps)
        for name, path in maps.items():
            files.setdefault(name, []).append(path)
    acc = {name: a for name, a in zip(files, mapper(map_statistics, list(files.values()))) if a is not None}
    if not acc:
        return []
    first = next(iter(acc.values()))
    db = Database({k: a.mean.astype(np.float32) for k, a in acc.items()},
                  {k: a.sd().astype(np.float32) for k, a in acc.items()},
                  {k: a.n for k, a in acc.items()}, [r.name for r in subject_roots], contributions,
                  first.reference, {k: a.units for k, a in acc.items()})
    return db.save(check_output_folder(folder))


def write_group(out: Path, subject_roots: Sequence[Path], participants: pd.DataFrame | None,
                mapper: Callable = map) -> list[Path]:
    """The group tables and template-space group maps of the subjects (see the module docstring).

    Parameters
    ----------
    out : Path
        Cohort derivatives folder; outputs go to ``out/group``.
    subject_roots : sequence of Path
        Derivatives folders (``out/sub-XX``) of the subjects that succeeded.
    participants : DataFrame, optional
        :func:`read_participants` table.
    mapper : callable
        How the maps' statistics are computed (see :func:`group_maps`).

    Returns
    -------
    list of Path
        Files written.
    """
    group = check_output_folder(out / "group")
    tables = [read_stats_csv(r / "tracts.csv") for r in subject_roots if (r / "tracts.csv").exists()]
    written = []
    if tables:
        long = pd.concat(tables, ignore_index=True)
        written.append(write_csv(_with_covariates(long, participants), group / "tracts_long.csv", layout="as-is"))
        wide = _with_covariates(wide_table(long), participants)
        written.append(write_csv(wide, group / "tracts_wide.csv", layout="as-is"))
    return written + group_maps(subject_roots, group / f"space-{TEMPLATE_SPACE}", mapper)

"""Statistics tables: the long and wide layouts, their columns, and UTF-8 CSV in and out.

The long layout (:data:`LONG_COLUMNS`) has one row per subject, label and map; the wide layout
(:func:`wide_table`) one row per subject and label with ``<map>_<stat>`` columns.
:data:`COLUMN_DOC` documents every column. CSV files are written atomically (temporary file,
then rename) into an existing, writable folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import atomic_write_bytes

#: Columns of the long layout (one row per subject, label and map), in order.
LONG_COLUMNS = (
    "subject", "label", "name", "map", "units", "n_voxels", "volume_mm3", "n_used",
    "mean", "sd", "median", "q1", "q3", "iqr", "min", "max", "weight_sum",
    "status", "source", "method", "statistics",
)
#: Per-map statistics repeated for every map in the wide layout (``<map>_<stat>``).
WIDE_STATS = ("mean", "sd", "median", "iqr", "min", "max", "n_used")
#: Documentation of each column of the CSV (also in the docs, docs/statistics.md).
COLUMN_DOC = {
    "subject": "subject/session identifier given by the user (empty when none)",
    "label": "integer label value of the ROI or tract",
    "name": "region name from the lookup table ('label N' when the table has none)",
    "map": "map name, lower case (mwf, fa, md, mk, chi, t1, ...)",
    "units": "units of mean/sd/median/q1/q3/iqr/min/max (MWF in %)",
    "n_voxels": "voxels carrying the label on the statistics grid",
    "volume_mm3": "ROI volume in mm^3 = n_voxels x voxel volume of the statistics grid",
    "n_used": "voxels that entered this map's statistics (finite, inside the map, passing the WM criterion)",
    "mean": "mean (weighted by the WM probability when weighting='weighted')",
    "sd": "sample standard deviation (n-1; reliability-weighted when weighted); NaN when n_used < 2",
    "median": "median (50th percentile, linear interpolation)",
    "q1": "25th percentile", "q3": "75th percentile", "iqr": "interquartile range q3 - q1",
    "min": "minimum", "max": "maximum",
    "weight_sum": "sum of WM weights (effective voxel count) when weighted, else n_used",
    "status": "'ok', or 'empty: <why>' for an ROI without usable voxels",
    "source": "file the map was read from (or the napari layer name)",
    "method": "method that produced the map (from its JSON sidecar)",
    "statistics": "how the statistics were computed (grid, resampling, weighting)",
}


def wide_table(long: pd.DataFrame, stats: Sequence[str] = WIDE_STATS) -> pd.DataFrame:
    """One row per (subject, label): ``subject, label, name, n_voxels, volume_mm3`` then, per map,
    ``<map>_units`` and ``<map>_<stat>`` for ``stats`` (plus ``<map>_z`` when z-scores are present and
    ``D`` for the multi-parameter distance)."""
    long = long.copy()
    long["subject"] = long["subject"].fillna("").astype(str)
    stats = list(stats) + [c for c in ("z", "abnormal") if c in long.columns]
    keys = ["subject", "label"]
    base = (long.groupby(keys, sort=True)
            .agg(name=("name", "first"), n_voxels=("n_voxels", "first"), volume_mm3=("volume_mm3", "first"))
            .reset_index())
    for extra in ("D", "D_abnormal"):
        if extra in long.columns:
            base = base.merge(long.groupby(keys)[extra].first().reset_index(), on=keys, how="left")
    for m in dict.fromkeys(long["map"]):
        part = long[long["map"] == m].set_index(keys)
        cols = {f"{m}_units": part["units"]}
        cols.update({f"{m}_{s}": part[s] for s in stats})
        base = base.merge(pd.DataFrame(cols).reset_index(), on=keys, how="left")
    return base


def table_to_csv_bytes(table: pd.DataFrame) -> bytes:
    """UTF-8 CSV (comma separated, header row, full float precision, no index)."""
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_csv(table: pd.DataFrame, path: str | os.PathLike, *, layout: str = "long") -> Path:
    """Write a statistics table as UTF-8 CSV, atomically (temporary file, then rename).

    Parameters
    ----------
    table : DataFrame
        Long-layout table (or any table with ``layout="as-is"``).
    path : path-like
        CSV file; its folder must exist and be writable (it is not created, so that a typo in the
        folder name does not silently create a new tree).
    layout : {"long", "wide", "as-is"}
        ``"wide"`` writes :func:`wide_table`.

    Raises
    ------
    InputError
        Missing or unwritable folder, or ``path`` is a folder; nothing is written then.
    """
    path = Path(path)
    if layout not in ("long", "wide", "as-is"):
        raise InputError(f"layout: '{layout}' is not one of 'long', 'wide'.")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist; create it or choose another CSV path.")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name ending in .csv.")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{path}: the folder {path.parent} is not writable; choose another CSV path.")
    data = wide_table(table) if layout == "wide" else table
    payload = table_to_csv_bytes(data)
    try:
        atomic_write_bytes(path, payload)
    except OSError as exc:
        raise InputError(f"{path}: cannot be written ({exc.strerror or exc}); choose another CSV path.") from None
    return path


def read_stats_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a long-layout statistics CSV written by :func:`write_csv` (checks the key columns)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: statistics table not found.")
    try:
        table = pd.read_csv(path, encoding="utf-8", keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc}).") from None
    need = {"label", "map", "mean"}
    if not need <= set(table.columns):
        raise InputError(
            f"{path}: a statistics table needs columns {sorted(need)}; found {list(table.columns)[:8]} "
            "(write it with 'napari-myelin stats' in the long layout)."
        )
    if "subject" not in table.columns:
        table.insert(0, "subject", "")
    table["subject"] = table["subject"].fillna("").astype(str)
    if "units" in table.columns:
        table["units"] = table["units"].fillna("").astype(str)
    if "status" not in table.columns:
        table["status"] = "ok"
    table["map"] = table["map"].astype(str).str.lower()
    table["label"] = table["label"].astype(int)
    return table

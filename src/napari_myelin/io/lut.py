"""Lookup tables that name the regions of a label map.

Two formats are read: a BIDS-style ``.tsv`` with at least ``index`` and ``name`` columns (extra
columns such as ``abbreviation`` and ``hemisphere`` are kept), and an FSL-style ``.txt`` with one
``index name`` pair per line (``#`` comments allowed). Tables are :class:`pandas.DataFrame` with an
``index`` column, which is also what napari's Labels ``features`` expect.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import strip_nifti_suffix


def read_lut(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``.tsv`` or FSL-style ``.txt`` lookup table into a DataFrame (``index``, ``name``, ...)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: lookup table not found.")
    if path.suffix == ".tsv":
        table = pd.read_csv(path, sep="\t")
    else:
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
                raise InputError(f"{path}: line '{line}' is not 'index name'; fix the lookup table.")
            rows.append((int(parts[0]), parts[1].strip()))
        table = pd.DataFrame(rows, columns=["index", "name"])
    if not {"index", "name"} <= set(table.columns):
        raise InputError(f"{path}: a lookup table needs 'index' and 'name' columns; found {list(table.columns)}.")
    table["index"] = table["index"].astype(int)
    return table.reset_index(drop=True)


def write_lut(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a lookup table as ``.tsv`` (UTF-8, tab separated)."""
    from napari_myelin.io.volume import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, table.to_csv(sep="\t", index=False).encode("utf-8"))
    return path


def find_lut(image_path: str | os.PathLike) -> pd.DataFrame | None:
    """The lookup table beside a label image (``NAME.tsv`` or ``NAME.txt``), or ``None``."""
    image_path = Path(image_path)
    stem = strip_nifti_suffix(image_path.name)
    for suffix in (".tsv", ".txt"):
        candidate = image_path.with_name(stem + suffix)
        if candidate.exists():
            return read_lut(candidate)
    return None

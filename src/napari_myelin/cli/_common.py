"""Shared pieces of the subcommands: output folder argument and a terminal progress bar."""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from tqdm import tqdm

from napari_myelin.utils.progress import ProgressFn


def add_out_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--out", required=required, metavar="DIR", help="output folder (created if needed)")


@contextlib.contextmanager
def terminal_progress(description: str) -> Iterator[ProgressFn]:
    """A ``progress(fraction, message)`` callback drawing a tqdm bar on stderr."""
    with tqdm(total=100, desc=description, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.n = round(100 * fraction)
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        yield progress


def add_normative_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """``--normative MODEL`` and ``--covariate NAME=VALUE`` (repeatable)."""
    parser.add_argument("--normative", metavar="MODEL", required=required,
                        help="normative model folder ('napari-myelin normative build'), or synthetic-demo for the "
                        "shipped SYNTHETIC demo table; z-scores and flags are written only with a model")
    parser.add_argument("--covariate", dest="covariates", action="append", default=[], metavar="NAME=VALUE",
                        help="the subject's covariate for the model, e.g. --covariate age=41 (repeat; default: "
                        "its row of participants.tsv)")


def parse_covariates(items: list[str]) -> dict:
    """``["age=41", "sex=F"]`` -> ``{"age": 41.0, "sex": "F"}`` (numbers as floats)."""
    from napari_myelin.utils.errors import InputError

    values: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InputError(f"--covariate {item}: expected NAME=VALUE, e.g. --covariate age=41.")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            values[name.strip()] = value.strip()
    return values

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

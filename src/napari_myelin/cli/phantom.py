"""``napari-myelin phantom OUT_DIR``: write a simulated subject (BIDS-like) with its ground truth."""

from __future__ import annotations

import argparse
import time

from napari_myelin.sims.phantom import write_phantom
from ._common import terminal_progress

HELP = "simulate a digital brain phantom (MESE, DWI, GRE, SPGR, B1) with ground-truth maps, BIDS-like"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="dataset folder to write (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: pose, deformation, B1, noise (default 0)")
    parser.add_argument("--size", choices=("small", "full"), default="full",
                        help="small: 4 mm model, seconds (tests); full: 2 mm demo subject (default)")
    parser.add_argument("--snr", type=float, default=200.0,
                        help="mean brain signal of each reference volume / noise sigma (default 200)")
    parser.add_argument("--lesions", action="store_true",
                        help="add demyelinating lesions and a tract of NAWM with reduced MWF (masks in the truth)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    with terminal_progress("phantom") as progress:
        files = write_phantom(args.out_dir, seed=args.seed, size=args.size, snr=args.snr, lesions=args.lesions,
                              progress=progress)
    for name, path in files.items():
        print(f"{name:10s} {path}")
    print(f"truth      {args.out_dir}/derivatives/truth  ({time.perf_counter() - start:.1f} s)")
    return 0

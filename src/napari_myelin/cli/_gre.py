"""Multi-echo GRE inputs shared by ``napari-myelin qsm`` and ``napari-myelin chisep``.

Magnitude and phase as one 4D file each (echoes last) or one file per echo (``*_echo-N_*``, the others
found by their echo number), echo times from ``--te`` or the sidecars, B0 from ``--b0`` or the
sidecar, an optional mask on the GRE grid. Every check names the file and what to do (exit status 2).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from napari_myelin.io.volume import Volume, load_echo_series, load_volume
from napari_myelin.reconst.qsm import phase_to_radians
from napari_myelin.utils.errors import InputError


@dataclass
class GreInputs:
    """A checked GRE series: magnitude and phase volumes, echo times (s), B0 (T), optional mask."""

    magnitude: Volume
    phase: Volume
    echo_times: list
    field_strength: float
    mask: np.ndarray | None


def add_gre_arguments(parser: argparse.ArgumentParser) -> None:
    """``MAGNITUDE PHASE [--te S ...] [--b0 T] [--mask FILE]``."""
    parser.add_argument("magnitude", help="multi-echo GRE magnitude (4D, echoes last; or one *_echo-N_* file)")
    parser.add_argument("phase", help="multi-echo GRE phase on the same grid (radians or scanner integers)")
    parser.add_argument("--te", type=float, nargs="+", metavar="S",
                        help="echo times in seconds (default: EchoTime from the sidecars)")
    parser.add_argument("--b0", type=float, metavar="T",
                        help="field strength in tesla (default: MagneticFieldStrength from the sidecar)")
    parser.add_argument("--mask", metavar="FILE", help="brain mask (default: dipy median_otsu on the magnitude)")


def load_series(path: str) -> Volume:
    """A 4D series, or the whole echo series when ``path`` is one ``*_echo-N_*`` file of it."""
    vol = load_volume(path)
    if vol.data.ndim == 3 and "_echo-" in vol.name + "_":
        try:
            return load_echo_series(path)
        except InputError:
            return vol
    return vol


def load_mask(path: str, grid: Volume, what: str) -> np.ndarray:
    """A mask file as bool on the GRE grid (``what`` names it in the message when the grids differ)."""
    m = load_volume(path)
    if m.shape[:3] != grid.shape[:3] or not np.allclose(m.affine, grid.affine, atol=1e-3):
        raise InputError(f"{path}: the {what} grid differs from the GRE grid {grid.shape[:3]}; resample it first.")
    return m.data.reshape(m.shape[:3]) > 0


def load_gre(args: argparse.Namespace, min_echoes: int = 1) -> GreInputs:
    """Load and check the GRE series named by :func:`add_gre_arguments` (before any work); ``min_echoes``
    is what the subcommand needs (2 when it fits R2*)."""
    mag = load_series(args.magnitude)
    ph = load_series(args.phase)
    if mag.shape != ph.shape:
        raise InputError(
            f"{args.phase}: shape {ph.shape} differs from the magnitude {args.magnitude} {mag.shape}; "
            "give the phase of the same GRE series."
        )
    if not np.allclose(mag.affine, ph.affine, atol=1e-3):
        raise InputError(f"{args.phase}: its grid differs from {args.magnitude}; give the phase of the same series.")
    n_echo = 1 if ph.data.ndim == 3 else ph.shape[3]
    if n_echo < min_echoes:
        raise InputError(f"{args.phase}: has {n_echo} echo(es); napari-myelin {args.command} needs at least "
                         f"{min_echoes} (R2* is fitted over the echoes); give the whole multi-echo series.")
    te = args.te if args.te else (ph.echo_times if ph.echo_times is not None else mag.echo_times)
    if te is None:
        raise InputError(f"{args.phase}: no EchoTime in the sidecar; pass --te with {n_echo} echo times in seconds.")
    if len(np.atleast_1d(te)) != n_echo:
        raise InputError(
            f"{args.phase}: has {n_echo} echoes but {len(np.atleast_1d(te))} echo times were given; "
            "pass one --te value (s) per echo."
        )
    b0 = args.b0 if args.b0 is not None else ph.metadata.get("MagneticFieldStrength",
                                                              mag.metadata.get("MagneticFieldStrength"))
    if b0 is None:
        raise InputError(f"{args.phase}: no MagneticFieldStrength in the sidecar; pass --b0 (tesla, e.g. 3).")
    phase_to_radians(ph.data, name=str(args.phase))  # a clear error naming the file before any work
    mask = load_mask(args.mask, ph, "mask") if args.mask else None
    return GreInputs(mag, ph, list(np.atleast_1d(te)), float(b0), mask)

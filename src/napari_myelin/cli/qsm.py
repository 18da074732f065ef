"""``napari-myelin qsm MAG PHASE --out DIR``: susceptibility (QSM) from multi-echo GRE."""

from __future__ import annotations

import argparse

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.reconst.qsm import BFR_METHODS, INVERSION_METHODS, UNWRAP_METHODS, fit_qsm, phase_to_radians
from napari_myelin.io.volume import check_output_folder, load_echo_series, load_volume, save_maps
from ._common import add_out_argument, terminal_progress

HELP = "QSM from multi-echo GRE magnitude + phase: field (Hz), local field, chi (ppm) and mask"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("magnitude", help="multi-echo GRE magnitude (4D, echoes last; or one *_echo-N_* file)")
    parser.add_argument("phase", help="multi-echo GRE phase on the same grid (radians or scanner integers)")
    add_out_argument(parser)
    parser.add_argument("--te", type=float, nargs="+", metavar="S",
                        help="echo times in seconds (default: EchoTime from the sidecars)")
    parser.add_argument("--b0", type=float, metavar="T",
                        help="field strength in tesla (default: MagneticFieldStrength from the sidecar)")
    parser.add_argument("--mask", metavar="FILE", help="brain mask (default: dipy median_otsu on the magnitude)")
    parser.add_argument("--unwrap", choices=UNWRAP_METHODS, default="laplacian", help="phase unwrapping")
    parser.add_argument("--bfr", choices=BFR_METHODS, default="pdf",
                        help="background field removal (pdf and lbv keep the brain edge)")
    parser.add_argument("--inversion", choices=INVERSION_METHODS, default="tv", help="dipole inversion")
    parser.add_argument("--reference", choices=("mean", "csf"), default="mean",
                        help="susceptibility reference (csf needs --csf-mask)")
    parser.add_argument("--csf-mask", metavar="FILE", help="CSF mask for --reference csf")
    parser.add_argument("--phase-sign", type=int, choices=(1, -1), default=1,
                        help="-1 if the scanner's phase decreases with a positive field offset")


def _load_series(path: str):
    vol = load_volume(path)
    if vol.data.ndim == 3 and "_echo-" in vol.name + "_":
        try:
            return load_echo_series(path)
        except InputError:
            return vol
    return vol


def _load_mask(path, grid, what):
    m = load_volume(path)
    if m.shape[:3] != grid.shape[:3] or not np.allclose(m.affine, grid.affine, atol=1e-3):
        raise InputError(f"{path}: the {what} grid differs from the GRE grid {grid.shape[:3]}; resample it first.")
    return m.data.reshape(m.shape[:3]) > 0


def run(args: argparse.Namespace) -> int:
    mag = _load_series(args.magnitude)
    ph = _load_series(args.phase)
    if mag.shape != ph.shape:
        raise InputError(
            f"{args.phase}: shape {ph.shape} differs from the magnitude {args.magnitude} {mag.shape}; "
            "give the phase of the same GRE series."
        )
    if not np.allclose(mag.affine, ph.affine, atol=1e-3):
        raise InputError(f"{args.phase}: its grid differs from {args.magnitude}; give the phase of the same series.")
    n_echo = 1 if ph.data.ndim == 3 else ph.shape[3]
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
    mask = _load_mask(args.mask, ph, "mask") if args.mask else None
    csf = _load_mask(args.csf_mask, ph, "CSF mask") if args.csf_mask else None
    check_output_folder(args.out)
    with terminal_progress("qsm") as progress:
        maps = fit_qsm(
            mag.data, ph.data, te, field_strength=float(b0), affine=ph.affine, mask=mask, unwrap=args.unwrap,
            bfr=args.bfr, inversion=args.inversion, reference=args.reference, reference_mask=csf,
            phase_sign=args.phase_sign, progress=progress,
        )
    inputs = [args.magnitude, args.phase] + [p for p in (args.mask, args.csf_mask) if p]
    written = save_maps(maps, args.out, ph.with_data(maps["chi"]), inputs=inputs)
    for path in written:
        print(path)
    return 0

"""``napari-myelin mwf ME.nii.gz --out DIR [--te ...] [--mask ...] [--reg chi2] ...``.

Myelin water fraction and the other T2-distribution maps (DECAES T2mapSEcorr + T2partSEcorr, see
:mod:`napari_myelin.reconst.mwf`) from a multi-echo spin-echo series: one 4D file whose sidecar lists
``EchoTime`` (s), or one file per echo (``*_echo-1_*``, ``*_echo-2_*`` ...; pass one or all). Writes
``mwf`` and ``iewf`` in percent, ``gmt2``/``sgm``/``mgm`` (s), ``alpha`` (deg), ``snr``, ``mu``,
``chi2_factor``, ``resnorm``, ``fnr``, ``gva``, ``gdn``, the 4D ``distribution`` and the ``fitted``
mask, each with a JSON sidecar stating its units.
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_myelin.reconst import mwf
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import check_output_folder, load_echo_series, load_volume, save_maps
from ._common import add_out_argument, terminal_progress

HELP = "myelin water fraction (DECAES-exact multi-echo T2 NNLS): mwf, iewf, gmt2, alpha, snr ... from a ME spin echo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("series", nargs="+", help="4D multi-echo spin-echo NIfTI (sidecar EchoTime list), or the "
                        "files of an echo-per-file series (*_echo-N_*)")
    add_out_argument(parser)
    parser.add_argument("--te", nargs="+", type=float, metavar="S", help="echo times in seconds, one per echo, or a "
                        "single echo spacing TE (echoes at TE, 2TE, ...); overrides the sidecar")
    parser.add_argument("--mask", help="brain mask on the same grid (default: automatic median-Otsu mask of the "
                        "echoes; 'none' fits every voxel)")
    parser.add_argument("--reg", choices=mwf.REGULARIZATIONS, default="chi2",
                        help="choice of the regularisation (default chi2)")
    parser.add_argument("--chi2-factor", type=float, default=1.02, help="allowed residual increase for --reg chi2 "
                        "(default 1.02)")
    parser.add_argument("--noise-level", type=float, help="noise standard deviation (signal units) for --reg mdp")
    parser.add_argument("--n-t2", type=int, default=40, help="number of log-spaced T2 bins (default 40)")
    parser.add_argument("--t2-range", nargs=2, type=float, default=(0.01, 2.0), metavar=("MIN", "MAX"),
                        help="first and last T2 bin in seconds (default 0.01 2.0)")
    parser.add_argument("--sp-window", nargs=2, type=float, default=(0.01, 0.04), metavar=("MIN", "MAX"),
                        help="short-T2 (myelin water) window in seconds (default 0.01 0.04)")
    parser.add_argument("--mp-window", nargs=2, type=float, default=(0.04, 0.2), metavar=("MIN", "MAX"),
                        help="medium-T2 (intra/extracellular) window in seconds (default 0.04 0.2)")
    parser.add_argument("--flip-angle", type=float, metavar="DEG", help="fix the refocusing angle (default: "
                        "optimised per voxel)")
    parser.add_argument("--b1", metavar="B1.nii.gz", help="B1 ratio map (1 = nominal): refocusing angle 180 x B1 per "
                        "voxel instead of optimising it")
    parser.add_argument("--n-ref-angles", type=int, default=64, help="flip-angle search grid size (default 64)")
    parser.add_argument("--min-ref-angle", type=float, default=50.0, help="smallest refocusing angle, deg (default 50)")
    parser.add_argument("--t1", type=float, default=1.0, help="fixed T1 of the EPG model in seconds (default 1)")


def load_series(paths):
    """The multi-echo series as one 4D Volume (4D file, or echo-per-file series)."""
    if len(paths) > 1:
        return load_echo_series(paths)
    vol = load_volume(paths[0])
    if vol.data.ndim == 4 and vol.data.shape[3] > 1:
        return vol
    if "_echo-" in str(paths[0]):
        return load_echo_series(paths[0])
    raise InputError(f"{paths[0]}: is a 3D image; the MWF fit needs a 4D multi-echo series (or one file per echo).")


def echo_times(vol, te_arg) -> np.ndarray:
    """Echo times (s) from --te (list, or one spacing) or the sidecar; validated against the echo count."""
    n = vol.data.shape[3]
    src = str(vol.path) if vol.path else "series"
    if te_arg:
        te = np.asarray(te_arg, dtype=float)
        if te.size == 1 and n > 1:
            te = te[0] * np.arange(1, n + 1)
        src = "--te"
    else:
        te = vol.echo_times
        if te is None:
            raise InputError(f"{src}: the sidecar has no EchoTime list; give the echo times with --te.")
    if te.size != n:
        raise InputError(f"{src}: {te.size} echo times for {n} echoes; give one echo time per echo.")
    if np.any(~np.isfinite(te)) or np.any(te <= 0):
        raise InputError(f"{src}: echo times must be positive seconds; check the EchoTime list or --te.")
    return te


def _on_grid(path, ref, what):
    vol = load_volume(path)
    data = np.asarray(vol.data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(ref.shape[:3]) or not np.allclose(vol.affine, ref.affine, atol=1e-3):
        raise InputError(f"{path}: its grid differs from the multi-echo series; give the {what} on that grid.")
    return data


def run(args: argparse.Namespace) -> int:
    vol = load_series(args.series)
    te = echo_times(vol, args.te)
    check_output_folder(args.out)
    inputs = list(args.series)
    if args.mask and args.mask.lower() == "none":
        mask = None
    elif args.mask:
        mask = _on_grid(args.mask, vol, "mask") > 0
        inputs.append(args.mask)
    else:
        mask = "auto"
    flip = args.flip_angle
    if args.b1:
        from napari_myelin.io.resample import b1_on_grid

        flip = 180.0 * b1_on_grid(load_volume(args.b1), vol)
        inputs.append(args.b1)
    with terminal_progress("mwf") as progress:
        maps = mwf.myelin_water(
            vol.data, te, sp_window=tuple(args.sp_window), mp_window=tuple(args.mp_window),
            n_t2=args.n_t2, t2_range=tuple(args.t2_range), reg=args.reg, chi2_factor=args.chi2_factor,
            noise_level=args.noise_level, flip_angle=flip, n_ref_angles=args.n_ref_angles,
            min_ref_angle=args.min_ref_angle, t1=args.t1, mask=mask, progress=progress,
        )
    written = save_maps(mwf.to_percent(maps), args.out, vol, inputs=inputs)
    p = maps.parameters
    print(f"wrote {len(written)} maps to {args.out} ({p['n_fitted']} voxels fitted, {p['n_skipped']} skipped for "
          f"NaN/Inf or no signal; reg {p['reg']}, {te.size} echoes, TE {te[0] * 1000:.4g} ms)")
    return 0

"""MTsat, T1 and MTR of ``fit_mtsat`` against the phantom's truth, and (``--pipeline``) the pipeline's tract means.

Voxel table: ``make_phantom(seed=0, size)`` at SNR 200, the MTS trio rounded to int16 as ``write_phantom`` stores
it, the measured B1 map resampled from its own grid; white matter = truth WM fraction >= 0.5. Prints the median
relative error of MTsat (against the tissue's MTsat at the nominal transmit field) and T1, and the median
absolute MTR difference, for the default fit, the exact equations, no B1 map and the model-based path (true B1,
no empirical factor), with the Spearman correlation of MTsat with the bound-pool fraction.

``--pipeline``: ``write_phantom(seed=3, size="small")`` through ``run_subject`` (preset ``affine``), then the
MTsat and MTR tract means of ``tracts.csv`` against the truth averaged over the same native labels (tracts with
at least 20 voxels).

Usage: ``python benchmarks/phantom_mtsat.py [small|full] [--pipeline OUT_DIR]``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from napari_myelin.io.resample import b1_on_grid
from napari_myelin.io.volume import load_volume
from napari_myelin.reconst.mtsat import fit_mtsat
from napari_myelin.sims.phantom import MTS_KEYS, make_phantom, write_phantom


def voxel_table(size: str) -> None:
    ph = make_phantom(seed=0, size=size, snr=200.0)
    truth = ph.truth["mts"]
    vols = [ph.acq[k] for k in MTS_KEYS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b1 = b1_on_grid(ph.acq["b1"], vols[0])
    data = [np.clip(np.rint(v.data), 0, 32767) for v in vols]
    fa = [v.metadata["FlipAngle"] for v in vols]
    tr = [v.metadata["RepetitionTimeExcitation"] for v in vols]
    mask = truth["mask"].data > 0
    wm = mask & (truth["wm"].data >= 0.5)
    print(f"phantom seed 0, {size}, SNR 200: {int(wm.sum())} WM voxels, B1 {truth['b1'].data[mask].min():.2f}-"
          f"{truth['b1'].data[mask].max():.2f}, true WM MTsat {np.median(truth['mtsat'].data[wm]):.2f} p.u., "
          f"MTR {np.median(truth['mtr'].data[wm]):.1f} %")
    fits = {"B1 map, factor 0.4, small-angle": {"b1": b1}, "B1 map, factor 0.4, exact": {"b1": b1, "exact": True},
            "no B1 map": {}, "true B1, factor 0, exact": {"b1": truth["b1"].data, "b1_correction": 0.0, "exact": True}}
    for name, kwargs in fits.items():
        m = fit_mtsat(*data, flip_angles=fa, repetition_times=tr, mask=mask, **kwargs)
        e_sat = np.median(m["mtsat"][wm] / truth["mtsat"].data[wm] - 1)
        e_t1 = np.median(m["t1"][wm] / truth["t1"].data[wm] - 1)
        d_mtr = np.median(np.abs(m["mtr"][wm] - truth["mtr"].data[wm]))
        rho = spearmanr(m["mtsat"][wm], truth["bpf"].data[wm]).statistic
        print(f"  {name:32s} MTsat {100 * e_sat:+5.1f} %  T1 {100 * e_t1:+5.1f} %  |MTR diff| {d_mtr:.2f}  "
              f"rho(MTsat, F) {rho:.3f}")


def pipeline_tracts(out: Path) -> None:
    import pandas as pd

    from napari_myelin.workflows.pipeline import run_subject

    if not (out / "ph" / "sub-03").exists():
        write_phantom(out / "ph", seed=3, size="small", snr=200.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_subject(out / "ph" / "sub-03", out / "results", preset="affine")
    table = pd.read_csv(out / "results/sub-03/tracts.csv")
    labels = load_volume(out / "results/sub-03/anat/sub-03_space-mts_tracts.nii.gz").data
    for name in ("mtsat", "mtr"):
        truth = load_volume(out / f"ph/derivatives/truth/sub-03/mts/{name}.nii.gz").data
        rows = table[(table["map"] == name) & (table["n_voxels"] >= 20)].set_index("label")
        errs = np.array([row["mean"] / truth[labels == label].mean() - 1 for label, row in rows.iterrows()])
        print(f"pipeline {name}: {len(rows)} tracts, mean relative error {100 * errs.mean():+.2f} %, "
              f"largest {100 * np.abs(errs).max():.2f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", default="small", choices=("small", "full"))
    parser.add_argument("--pipeline", type=Path, metavar="OUT_DIR", help="also run the pipeline on seed 3 here")
    args = parser.parse_args()
    voxel_table(args.size)
    if args.pipeline:
        pipeline_tracts(args.pipeline)

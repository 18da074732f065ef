"""Validation on data the estimators did not generate (issue 16): the project phantom beside the
independent simulator's frozen subjects, as Markdown tables.

For every subject (the project phantom, seed 0, and the frozen seeds of
``napari_myelin.sims.independent.FROZEN_TEST_SEEDS``) the estimators run with their defaults and are
compared with the subject's truth:

* **MWF** (``myelin_water``, chi2 1.02) in WM tract voxels (WM fraction > 0.5): tract means, mean
  error (bias), largest error, Pearson r;
* **DKI** (``fit_dki``, WLS, all shells) in WM tract voxels: relative error of the tract means of FA,
  MD and MK (median over tracts and worst tract); for the independent subjects also the fit of the
  noise-free series, i.e. the **truncation bias** against the cumulant truth;
* **QSM** (``fit_qsm`` defaults, automatic mask): NRMSE of the demeaned susceptibility in the mask
  (and in the mask eroded by 2 voxels), WM-tract and deep-grey means against the truth;
* **T1 / QPM** (``qpm`` two-pool with the B1 map): median T1 and PD error in WM, QPM myelin (fraction)
  against the true MWF (mean difference in WM and Spearman rho);
* **MTsat** (``fit_mtsat`` defaults with the B1 map, on the MTS trio): WM and GM mean against the truth
  (Helms' delta at B1 = 1), tract means r, MTR and T1 in WM;
* **chi-separation** (``fit_qsm`` then ``separate_susceptibility`` with the MESE's mono-exponential R2 moved
  by world coordinates, Dr 137 Hz/ppm): chi_dia in WM against the truth (means, voxel and tract r),
  chi_para in iron-rich deep grey matter (true chi_para > 0.08 ppm).

The independent subjects are simulated with ``chi_separation=True`` (iron in WM and a GRE whose R2' is
built from the susceptibility sources; the other acquisitions are those of the default subject). Further
QPM studies (pool-parameter sensitivity, cross-subject calibration): ``benchmarks/qpm_sensitivity.py``.

SNR: MESE, GRE and SPGR 200, DWI 50 for every subject (the project's own phantom benchmarks).
``--extras`` adds, on the first frozen subject: the MWF with equal excitation and refocusing slices,
with myelin-IE exchange in the MESE, and the T1 with imperfect RF spoiling (50 deg increment).

Usage::

    python benchmarks/validation.py [--size small|full] [--subjects 5] [--extras]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import spearmanr

SNR = {"mese": 200.0, "dwi": 50.0, "gre": 200.0, "spgr": 200.0}


def tract_means(labels, sel, estimate, truth, min_voxels=10):
    """(estimate, truth) tract means over ``sel`` for labelled tracts with at least ``min_voxels`` voxels."""
    out = [(np.nanmean(estimate[sel & (labels == i)]), np.mean(truth[sel & (labels == i)]))
           for i in np.unique(labels[sel]) if i > 0 and (sel & (labels == i)).sum() >= min_voxels]
    return np.array(out).reshape(-1, 2)


def mwf_metrics(mese, truth) -> dict:
    from napari_myelin.api import myelin_water

    labels = truth["labels"].data
    sel = truth["mask"].data.astype(bool) & (truth["wm"].data > 0.5) & (labels > 0)
    fit = myelin_water(mese.data, mese.echo_times, mask=sel)
    t = 100 * tract_means(labels, sel, fit["mwf"], truth["mwf"].data)
    err = t[:, 0] - t[:, 1]
    return {"MWF tracts": f"{len(t)}", "MWF truth mean (%)": f"{t[:, 1].mean():.2f}",
            "MWF bias (points)": f"{err.mean():+.2f}", "MWF max abs error (points)": f"{np.abs(err).max():.2f}",
            "MWF r (tract means)": f"{np.corrcoef(t.T)[0, 1]:.3f}"}


def dki_metrics(dwi, truth, label="") -> dict:
    from napari_myelin.api import fit_dki

    mask = truth["mask"].data.astype(bool)
    labels = truth["labels"].data
    sel = mask & (truth["wm"].data > 0.5) & (labels > 0)
    fit = fit_dki(dwi.data, dwi.bvals, dwi.bvecs, mask=mask, affine=dwi.affine)
    out = {}
    for key in ("fa", "md", "mk"):
        t = tract_means(labels, sel, fit[key], truth[key].data, min_voxels=20)
        rel = 100 * (t[:, 0] / t[:, 1] - 1)
        out[f"DKI {key.upper()}{label} tract error (%), median / worst"] = (
            f"{np.median(rel):+.1f} / {rel[np.argmax(np.abs(rel))]:+.1f}")
    return out


def qsm_metrics(mag, phase, truth) -> dict:
    from napari_myelin.api import fit_qsm

    q = fit_qsm(mag.data, phase.data, mag.echo_times, field_strength=3.0, affine=phase.affine)
    m = truth["mask"].data.astype(bool) & (q["mask"] > 0)
    out = {}
    for name, region in (("", m), (", eroded 2 vox", ndi.binary_erosion(m, iterations=2))):
        est = q["chi"] - q["chi"][region].mean()
        tru = truth["chi"].data - truth["chi"].data[region].mean()
        out[f"QSM NRMSE{name} (%)"] = f"{100 * np.linalg.norm(est[region] - tru[region]) / np.linalg.norm(tru[region]):.0f}"
    wm = m & (truth["wm"].data > 0.9)
    est, tru = q["chi"] - q["chi"][m].mean(), truth["chi"].data - truth["chi"].data[m].mean()
    iron = m & (truth["chi"].data > 0.05)
    out["QSM WM chi, est / truth (ppb)"] = f"{1000 * est[wm].mean():+.1f} / {1000 * tru[wm].mean():+.1f}"
    out["QSM deep GM (chi > 0.05) est / truth (ppb)"] = f"{1000 * est[iron].mean():+.0f} / {1000 * tru[iron].mean():+.0f}"
    t = tract_means(truth["labels"].data, m & (truth["wm"].data > 0.5), est, tru, min_voxels=20)
    out["QSM tract means r"] = f"{np.corrcoef(t.T)[0, 1]:.2f}" if len(t) > 2 else "n/a"
    return out


def qpm_metrics(spgr, b1_map, truth) -> dict:
    from napari_myelin.api import b1_on_grid, qpm
    from napari_myelin.reconst.qpm import spgr_protocol

    fa, tr = spgr_protocol(spgr.metadata, spgr.shape[3])
    mask = truth["mask"].data.astype(bool)
    r = qpm(spgr.data, fa, tr, b1=b1_on_grid(b1_map, spgr), mask=mask)
    wm = mask & (truth["wm"].data >= 0.9)
    t1 = 100 * np.median(r["t1"][wm] / truth["t1"].data[wm] - 1)
    pd = 100 * np.median(r["pd"][wm] / truth["pd"].data[wm] - 1)
    my, mwf = r["qpm_myelin"][wm], truth["mwf"].data[wm]
    return {"T1 median error in WM (%)": f"{t1:+.1f}", "PD median error in WM (%)": f"{pd:+.1f}",
            "QPM myelin - MWF in WM (points)": f"{100 * (np.nanmean(my) - mwf.mean()):+.2f}",
            "QPM myelin vs MWF, Spearman": f"{spearmanr(my, mwf, nan_policy='omit')[0]:.2f}"}


def mtsat_metrics(acq: dict, truth: dict) -> dict:
    from napari_myelin.api import b1_on_grid, fit_mtsat

    vols = [acq[k] for k in ("mts_mtw", "mts_pdw", "mts_t1w")]
    mask = truth["mask"].data.astype(bool)
    fit = fit_mtsat(*(v.data for v in vols), flip_angles=[v.metadata["FlipAngle"] for v in vols],
                    repetition_times=[v.metadata["RepetitionTimeExcitation"] for v in vols],
                    b1=b1_on_grid(acq["b1"], vols[0]), mask=mask)
    wm = mask & (truth["wm"].data > 0.9)
    gm = mask & (truth["wm"].data < 0.05) & (truth["mtsat"].data > 0.8)
    t = tract_means(truth["labels"].data, mask & (truth["wm"].data > 0.5), fit["mtsat"], truth["mtsat"].data)
    return {"MTsat WM est / truth (p.u.)": f"{fit['mtsat'][wm].mean():.2f} / {truth['mtsat'].data[wm].mean():.2f}",
            "MTsat GM est / truth (p.u.)": f"{fit['mtsat'][gm].mean():.2f} / {truth['mtsat'].data[gm].mean():.2f}",
            "MTsat tract means r": f"{np.corrcoef(t.T)[0, 1]:.3f}",
            "MTR WM est / truth (%)": f"{fit['mtr'][wm].mean():.2f} / {truth['mtr'].data[wm].mean():.2f}",
            "MTS T1 median error in WM (%)": f"{100 * np.median(fit['t1'][wm] / truth['t1'].data[wm] - 1):+.1f}"}


def chisep_metrics(mag, phase, mese, truth) -> dict:
    from napari_myelin.api import fit_qsm, separate_susceptibility
    from napari_myelin.workflows.chisep import r2_on_gre, spin_echo_r2

    q = fit_qsm(mag.data, phase.data, mag.echo_times, field_strength=3.0, affine=phase.affine)
    r2 = r2_on_gre(spin_echo_r2(mese), mag.with_data(mag.data[..., 0]))
    m = truth["mask"].data.astype(bool) & (q["mask"] > 0)
    sep = separate_susceptibility(q["local_field"], q["r2star"], r2, b0=3.0, mask=m, affine=phase.affine)
    wm = m & (truth["wm"].data > 0.9)
    dia, para = truth["chi_dia"].data, truth["chi_para"].data
    t = tract_means(truth["labels"].data, m & (truth["wm"].data > 0.5), sep["chi_dia"], dia, min_voxels=20)
    deep = m & (para > 0.08)
    out = {"chi_dia WM est / truth (ppb)": f"{1000 * sep['chi_dia'][wm].mean():.1f} / {1000 * dia[wm].mean():.1f}",
           "chi_dia WM voxel r / tract means r": f"{np.corrcoef(sep['chi_dia'][wm], dia[wm])[0, 1]:.2f} / "
                                                 f"{np.corrcoef(t.T)[0, 1]:.2f}",
           "chi_para deep GM est / truth (ppb)": f"{1000 * sep['chi_para'][deep].mean():.0f} / "
                                                 f"{1000 * para[deep].mean():.0f}",
           "R2' WM est (1/s)": f"{np.median(sep['r2prime'][wm]):.1f}"}
    if "r2prime" in truth:
        out["R2' WM est (1/s)"] += f" / truth {np.median(truth['r2prime'].data[wm]):.1f}"
    return out


def evaluate(acq: dict, truth: dict, dwi_clean=None) -> dict:
    """Every metric of one subject (acquisitions and truth in the layout shared by both simulators)."""
    out = {**mwf_metrics(acq["mese"], truth["mese"]), **dki_metrics(acq["dwi"], truth["dwi"])}
    if dwi_clean is not None:
        out.update(dki_metrics(dwi_clean, truth["dwi"], " noise-free (truncation)"))
    out.update(qsm_metrics(acq["gre_mag"], acq["gre_phase"], truth["gre"]))
    out.update(qpm_metrics(acq["spgr"], acq["b1"], truth["spgr"]))
    if "mts" in truth:
        out.update(mtsat_metrics(acq, truth["mts"]))
    if "chi_dia" in truth["gre"]:
        out.update(chisep_metrics(acq["gre_mag"], acq["gre_phase"], acq["mese"], truth["gre"]))
    return out


def project_phantom(size: str) -> dict:
    from napari_myelin.sims.phantom import make_phantom

    ph = make_phantom(seed=0, size=size, snr=SNR["mese"])
    ph_dwi = make_phantom(seed=0, size=size, snr=SNR["dwi"])
    acq = {**ph.acq, "dwi": ph_dwi.acq["dwi"]}
    truth = {**ph.truth, "dwi": ph_dwi.truth["dwi"]}
    return evaluate(acq, truth)


def independent(seed: int, size: str) -> dict:
    from napari_myelin.sims.independent import make_independent_subject
    from napari_myelin.sims.independent import subject as sub
    from napari_myelin.sims.independent.acquire import acquire_dwi

    ind = make_independent_subject(seed, size, SNR, chi_separation=True)
    clean, _ = acquire_dwi(sub._session(seed, size, {**SNR, "dwi": np.inf}))
    return evaluate(ind.acq, ind.truth, dwi_clean=clean)


def extras(seed: int, size: str) -> dict:
    from napari_myelin.sims.independent import make_independent_subject

    out = {}
    for label, options in (("equal refocusing and excitation slices", {"refocusing_ratio": 1.0}),
                           ("myelin-IE exchange in the MESE", {"mese_exchange": True})):
        ind = make_independent_subject(seed, size, SNR, **options)
        out[label] = mwf_metrics(ind.acq["mese"], ind.truth["mese"])
    ind = make_independent_subject(seed, size, SNR, spoiling="rf50")
    out["imperfect RF spoiling (50 deg)"] = qpm_metrics(ind.acq["spgr"], ind.acq["b1"], ind.truth["spgr"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--subjects", type=int, default=5, help="how many frozen subjects")
    parser.add_argument("--extras", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from napari_myelin.sims.independent import FROZEN_TEST_SEEDS

    t0 = time.perf_counter()
    columns = {"project phantom (seed 0)": project_phantom(args.size)}
    for seed in FROZEN_TEST_SEEDS[:args.subjects]:
        columns[f"independent {seed}"] = independent(seed, args.size)
    rows = list(dict.fromkeys(k for c in sorted(columns.values(), key=len, reverse=True) for k in c))
    print(f"size {args.size}; SNR {SNR}\n")
    print("| metric | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for row in rows:
        print(f"| {row} | " + " | ".join(c.get(row, "") for c in columns.values()) + " |")
    if args.extras:
        print(f"\nsensitivity, independent {FROZEN_TEST_SEEDS[0]}:\n")
        for label, metrics in extras(FROZEN_TEST_SEEDS[0], args.size).items():
            print(f"- {label}: " + "; ".join(f"{k} {v}" for k, v in metrics.items()))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

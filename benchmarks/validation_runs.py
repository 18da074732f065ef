"""Accuracy of ``napari-myelin run`` on written independent subjects (issue 16), from the files on disk.

Reads a folder laid out by ``write_independent_subject`` (``RAW/sub-XXXX``, ``RAW/derivatives/truth``) and
the pipeline's outputs (``OUT/sub-XXXX``, ``napari-myelin run RAW/sub-XXXX --out OUT``), and compares each
native-grid map with the truth of that acquisition's grid (same grid, so no resampling): WM voxels are
those with a true WM fraction >= 0.9, tracts the truth labels with a WM fraction > 0.5 and at least 10
voxels (20 for DKI and the GRE maps).

* MWF (``space-mese_mwf``, %): tract-mean bias, worst tract, r;
* DKI (``space-dwi_fa|md|mk``): median relative error of the tract means against the cumulant truth;
* QSM (``space-megre_chi``): WM and deep-GM (true chi > 0.05 ppm) means, demeaned over the mask;
* chi-separation (``space-megre_chi_dia|chi_para``): WM chi_dia and deep-GM chi_para against the truth,
  tract-mean r of chi_dia;
* T1, QPM (``space-vfa_t1|qpm_myelin``): median T1 error in WM, QPM myelin - true MWF, Spearman;
* MTsat (``space-mts_mtsat|mtr``): WM and GM means against the truth, tract-mean r.

Usage::

    python benchmarks/validation_runs.py /work/indep_runs/full [--seeds 1601 1602 ...]

(``ROOT/raw`` and ``ROOT/processed`` as written by the run script described in docs/validation.md.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def _load(path: Path):
    from napari_myelin.io.volume import load_volume

    return np.asarray(load_volume(path).data, float) if path.exists() else None


def _tracts(labels, sel, est, tru, min_voxels):
    rows = [(np.nanmean(est[sel & (labels == i)]), tru[sel & (labels == i)].mean())
            for i in np.unique(labels[sel]) if i > 0 and (sel & (labels == i)).sum() >= min_voxels]
    return np.array(rows).reshape(-1, 2)


def subject_metrics(raw: Path, out: Path, seed: int) -> dict:
    """The metrics of one subject (module docstring); a modality whose output is missing is skipped."""
    sub = f"sub-{seed}"
    truth = raw / "derivatives" / "truth" / sub
    anat, dwi = out / sub / "anat", out / sub / "dwi"
    res = {}

    def t(mod, name):
        return _load(truth / mod / f"{name}.nii.gz")

    def grid(mod):
        mask = t(mod, "mask") > 0
        wm = t(mod, "wm")
        return mask, wm, t(mod, "labels").astype(int)

    mwf = _load(anat / f"{sub}_space-mese_mwf.nii.gz")
    if mwf is not None:
        mask, wm, lab = grid("mese")
        tr = _tracts(lab, mask & (wm > 0.5), mwf, 100 * t("mese", "mwf"), 10)
        err = tr[:, 0] - tr[:, 1]
        res["MWF tract bias / worst (points), r"] = f"{err.mean():+.2f} / {np.abs(err).max():.2f}, {np.corrcoef(tr.T)[0, 1]:.3f}"
    if (dwi / f"{sub}_space-dwi_fa.nii.gz").exists():
        mask, wm, lab = grid("dwi")
        cells = []
        for k in ("fa", "md", "mk"):
            tr = _tracts(lab, mask & (wm > 0.5), _load(dwi / f"{sub}_space-dwi_{k}.nii.gz"), t("dwi", k), 20)
            cells.append(f"{100 * np.median(tr[:, 0] / tr[:, 1] - 1):+.1f}")
        res["DKI FA / MD / MK median tract error (%)"] = " / ".join(cells)
    chi = _load(anat / f"{sub}_space-megre_chi.nii.gz")
    if chi is not None:
        mask, wm, lab = grid("gre")
        m = mask & (_load(anat / f"{sub}_space-megre_mask.nii.gz") > 0)
        tchi = t("gre", "chi")
        est, tru = chi - chi[m].mean(), tchi - tchi[m].mean()
        deep = m & (tchi > 0.05)
        res["QSM WM / deep GM, est / truth (ppb)"] = (f"{1000 * est[m & (wm > 0.9)].mean():+.0f} / {1000 * tru[m & (wm > 0.9)].mean():+.0f}, "
                                                      f"{1000 * est[deep].mean():+.0f} / {1000 * tru[deep].mean():+.0f}")
        dia = _load(anat / f"{sub}_space-megre_chi_dia.nii.gz")
        if dia is not None:
            para = _load(anat / f"{sub}_space-megre_chi_para.nii.gz")
            tdia, tpara = t("gre", "chi_dia"), t("gre", "chi_para")
            w = m & (wm > 0.9)
            tr = _tracts(lab, m & (wm > 0.5), dia, tdia, 20)
            d2 = m & (tpara > 0.08)
            res["chi_dia WM est / truth (ppb), tract r"] = (f"{1000 * dia[w].mean():.1f} / {1000 * tdia[w].mean():.1f}, "
                                                           f"{np.corrcoef(tr.T)[0, 1]:.2f}")
            res["chi_para deep GM est / truth (ppb)"] = f"{1000 * para[d2].mean():.0f} / {1000 * tpara[d2].mean():.0f}"
    t1 = _load(anat / f"{sub}_space-vfa_t1.nii.gz")
    if t1 is not None:
        mask, wm, lab = grid("spgr")
        w = mask & (wm >= 0.9)
        q = _load(anat / f"{sub}_space-vfa_qpm_myelin.nii.gz")
        tm = t("spgr", "mwf")
        res["T1 WM median error (%)"] = f"{100 * np.median(t1[w] / t('spgr', 't1')[w] - 1):+.1f}"
        res["QPM myelin - MWF WM (points), Spearman"] = (f"{100 * (np.nanmean(q[w]) - tm[w].mean()):+.2f}, "
                                                        f"{spearmanr(q[w], tm[w], nan_policy='omit')[0]:.2f}")
    mts = _load(anat / f"{sub}_space-mts_mtsat.nii.gz")
    if mts is not None:
        mask, wm, lab = grid("mts")
        tm = t("mts", "mtsat")
        w, g = mask & (wm > 0.9), mask & (wm < 0.05) & (tm > 0.8)
        tr = _tracts(lab, mask & (wm > 0.5), mts, tm, 10)
        res["MTsat WM, GM est / truth (p.u.), tract r"] = (f"{mts[w].mean():.2f} / {tm[w].mean():.2f}, "
                                                          f"{mts[g].mean():.2f} / {tm[g].mean():.2f}, "
                                                          f"{np.corrcoef(tr.T)[0, 1]:.3f}")
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder with raw/ and processed/")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    args = parser.parse_args(argv)
    raw, out = args.root / "raw", args.root / "processed"
    seeds = args.seeds or sorted(int(p.name[4:]) for p in out.glob("sub-*") if (out / p.name / "tracts.csv").exists())
    cols = {s: subject_metrics(raw, out, s) for s in seeds}
    rows = list(dict.fromkeys(k for c in cols.values() for k in c))
    print("| metric | " + " | ".join(f"sub-{s}" for s in seeds) + " |")
    print("|---|" + "---:|" * len(seeds))
    for r in rows:
        print(f"| {r} | " + " | ".join(cols[s].get(r, "") for s in seeds) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

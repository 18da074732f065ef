"""QPM myelin map on the independent simulator (issue 16): sensitivity to the assumed pool parameters, and its
quadratic calibration to MWF fitted on one set of subjects and evaluated on another.

The QPM two-pool model (``reconst.qpm.myelin_map``, ``method="two-pool"``) fixes the myelin-water T1
``t1_m`` (0.5 s), the intra/extra-cellular T1 ``t1_ie`` (1.05 s), the myelin-water residence time
``tau_m`` (0.12 s), the free-water T1 ``t1_fw`` (4.0 s) and the tissue water content ``pd_tissue`` (0.7)
above which water counts as free (the PD normalisation). Each independent subject draws its own pool
parameters (``sims.independent.constants.TISSUE_RANGES``). For every subject the SPGR series and the B1
map are simulated (SNR 200), T1/PD are fitted once (``fit_vfa`` with the B1 map) and the myelin map is
recomputed with each parameter varied around its default, the others at their defaults:

* **WM mean** (WM fraction >= 0.9): QPM myelin minus the true MWF (points);
* **tract means** (WM fraction > 0.5, labelled, >= 10 voxels): mean change from the default map (points),
  Spearman rho of the tract means with the true tract MWF;
* **voxels**: Spearman rho with the true MWF in WM.

**Calibration**: ``fit_mwf_calibration`` (MWF % = c0 + c1 M + c2 M^2) on the pooled WM voxels of the
training subjects (:data:`TRAIN_SEEDS`, never frozen seeds), applied to the evaluation subjects (the
frozen seeds, measured only): RMSE and bias of the calibrated map against the true MWF in WM voxels and
tract means, beside the calibration fitted on each evaluation subject itself (optimistic) and the
uncalibrated map. The true MWF is the calibration target (the pipeline's ``calibrate`` step uses the
subject's MESE MWF instead).

Usage::

    python benchmarks/qpm_sensitivity.py [--size small|full] [--subjects 5] [--train 4]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.stats import spearmanr

SNR = {"mese": 200.0, "dwi": 50.0, "gre": 200.0, "spgr": 200.0}
#: Training seeds of the cross-subject calibration (disjoint from the frozen seeds and from the normative
#: benchmark's 2000+/3000+ seeds).
TRAIN_SEEDS = (4101, 4102, 4103, 4104, 4105, 4106)
DEFAULTS = {"t1_m": 0.5, "t1_ie": 1.05, "tau_m": 0.12, "t1_fw": 4.0, "pd_tissue": 0.7}
#: Variations around the defaults (one parameter at a time).
VARIANTS = {"t1_m": (0.35, 0.65), "t1_ie": (0.9, 1.2), "tau_m": (0.08, 0.2), "t1_fw": (3.5, 4.5),
            "pd_tissue": (0.65, 0.75, None)}


def spgr_subject(seed: int, size: str) -> dict:
    """SPGR series, B1 on its grid and the SPGR truth of one independent subject (nothing else simulated)."""
    from napari_myelin.api import b1_on_grid
    from napari_myelin.sims.independent import subject as sub
    from napari_myelin.sims.independent.acquire import acquire_b1, acquire_spgr

    se = sub._session(seed, size, sub._snr(SNR))
    b1, _ = acquire_b1(se)
    spgr, truth = acquire_spgr(se)
    return {"spgr": spgr, "b1": b1_on_grid(b1, spgr), "truth": truth, "tissue": se.tissue}


def qpm_maps(subj: dict) -> dict:
    """QPM myelin map for the defaults and every variant: ``{(name, value): map}`` (``("default", None)`` first)."""
    from napari_myelin.reconst.qpm import fit_vfa, myelin_map, spgr_protocol

    spgr, truth = subj["spgr"], subj["truth"]
    fa, tr = spgr_protocol(spgr.metadata, spgr.shape[3])
    mask = truth["mask"].data.astype(bool)
    vfa = fit_vfa(spgr.data, fa, tr, b1=subj["b1"], mask=mask)
    runs = [("default", None, {})] + [(k, v, {k: v}) for k, vals in VARIANTS.items() for v in vals]
    out = {}
    for name, value, change in runs:
        pars = {**DEFAULTS, **change}
        out[(name, value)] = myelin_map(spgr.data, fa, tr, b1=subj["b1"], mask=mask, pd=vfa["pd"],
                                        **pars)["qpm_myelin"]
    return out


def _tracts(truth: dict, est: np.ndarray) -> np.ndarray:
    """(estimate, true MWF) tract means, WM fraction > 0.5, labelled, >= 10 voxels."""
    lab, mask = truth["labels"].data, truth["mask"].data.astype(bool)
    sel = mask & (truth["wm"].data > 0.5) & (lab > 0)
    rows = [(np.nanmean(est[sel & (lab == i)]), truth["mwf"].data[sel & (lab == i)].mean())
            for i in np.unique(lab[sel]) if (sel & (lab == i)).sum() >= 10]
    return np.array(rows)


def sensitivity_rows(subj: dict, maps: dict) -> dict:
    """Metrics of every variant of one subject: ``{(name, value): (wm bias, tract change, rho tracts, rho voxels)}``."""
    truth = subj["truth"]
    wm = truth["mask"].data.astype(bool) & (truth["wm"].data >= 0.9)
    mwf = truth["mwf"].data
    base = _tracts(truth, maps[("default", None)])
    out = {}
    for key, m in maps.items():
        t = _tracts(truth, m)
        out[key] = (100 * (np.nanmean(m[wm]) - mwf[wm].mean()), 100 * np.mean(t[:, 0] - base[:, 0]),
                    spearmanr(t[:, 0], t[:, 1], nan_policy="omit")[0], spearmanr(m[wm], mwf[wm], nan_policy="omit")[0])
    return out


def calibration_study(train: list, test: list) -> dict:
    """Cross-subject quadratic calibration (train -> test) against within-subject and no calibration."""
    from napari_myelin.reconst.qpm import fit_mwf_calibration

    def wm_points(subj, m):
        truth = subj["truth"]
        wm = truth["mask"].data.astype(bool) & (truth["wm"].data >= 0.9) & np.isfinite(m)
        return m[wm], truth["mwf"].data[wm]

    xs, ys = zip(*(wm_points(s, m) for s, m in train))
    cal = fit_mwf_calibration(np.concatenate(ys), np.concatenate(xs), mwf_units="fraction").calibration
    rows = {}
    for seed_subj, m in test:
        x, y = wm_points(seed_subj, m)
        own = fit_mwf_calibration(y, x, mwf_units="fraction").calibration
        t = _tracts(seed_subj["truth"], m)
        res = {}
        for label, f in (("cross-subject", cal.apply), ("own subject", own.apply), ("uncalibrated", lambda v: 100 * v)):
            err_v, err_t = f(x) - 100 * y, f(t[:, 0]) - 100 * t[:, 1]
            res[label] = (np.sqrt(np.mean(err_v ** 2)), np.mean(err_v), np.sqrt(np.mean(err_t ** 2)),
                          np.corrcoef(f(t[:, 0]), t[:, 1])[0, 1])
        rows[seed_subj["seed"]] = res
    return {"calibration": cal, "rows": rows}


def _print_sensitivity(results: dict, title: str) -> None:
    """One row per variant: mean over the subjects (and range) of the four metrics of :func:`sensitivity_rows`."""
    keys = list(next(iter(results.values())))
    print(f"\n{title} ({len(results)} subjects {list(results)}): mean over subjects [min, max]\n")
    print("| QPM parameter (default) | value | WM mean - true MWF (points) | tract means, change from defaults "
          "(points) | Spearman, tract means vs true MWF | Spearman, WM voxels |")
    print("|---|---|---:|---:|---:|---:|")
    for name, value in keys:
        label = "defaults" if name == "default" else f"`{name}` ({DEFAULTS[name]})"
        vals = np.array([results[s][(name, value)] for s in results])
        cells = [f"{vals[:, i].mean():{'+' if i < 2 else ''}.2f} [{vals[:, i].min():{'+' if i < 2 else ''}.2f}, "
                 f"{vals[:, i].max():{'+' if i < 2 else ''}.2f}]" for i in range(4)]
        print(f"| {label} | {'' if name == 'default' else value} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--subjects", type=int, default=5, help="how many frozen subjects to evaluate on")
    parser.add_argument("--train", type=int, default=len(TRAIN_SEEDS), help="how many training subjects")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from napari_myelin.sims.independent import FROZEN_TEST_SEEDS

    t0 = time.perf_counter()
    evaluation, train, results, results_train = [], [], {}, {}
    for seed in TRAIN_SEEDS[:args.train]:
        subj = spgr_subject(seed, args.size)
        maps = qpm_maps(subj)
        results_train[seed] = sensitivity_rows(subj, maps)
        train.append((subj, maps[("default", None)]))
    for seed in FROZEN_TEST_SEEDS[:args.subjects]:
        subj = {**spgr_subject(seed, args.size), "seed": seed}
        maps = qpm_maps(subj)
        results[seed] = sensitivity_rows(subj, maps)
        evaluation.append((subj, maps[("default", None)]))
    print(f"size {args.size}; SNR 200 (SPGR); B1 map; estimator defaults except the parameter varied")
    _print_sensitivity(results_train, "training seeds (not frozen: may inform a default)")
    _print_sensitivity(results, "frozen test seeds (measured only)")
    cal = calibration_study(train, evaluation)
    c = cal["calibration"]
    print(f"\ncalibration on {len(train)} training subjects {list(TRAIN_SEEDS[:args.train])} ({c.n} WM voxels): "
          f"MWF % = {c.coefficients[0]:.2f} + {c.coefficients[1]:.2f} M + {c.coefficients[2]:.2f} M^2, "
          f"R^2 {c.r2:.2f}, residual SD {c.residual_sd:.2f} points\n")
    print("| frozen subject | calibration | WM voxel RMSE (points) | WM voxel bias | tract RMSE | tract r |")
    print("|---|---|---:|---:|---:|---:|")
    for seed, res in cal["rows"].items():
        for label, (rv, bv, rt, r) in res.items():
            print(f"| {seed} | {label} | {rv:.2f} | {bv:+.2f} | {rt:.2f} | {r:.2f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fusion evaluation: the network's white-matter RMSE and uncertainty calibration, regression baselines,
and per-subject error metrics, all in MWF percentage points.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from napari_myelin.fusion.card import FusionModel
from napari_myelin.fusion.inference import predict
from napari_myelin.fusion.subjects import FusionSubject, _subject_tensors


def evaluate_rmse(model: FusionModel, subjects: Sequence[FusionSubject], drop: Sequence[str] = (), n_samples: int = 1):
    """Voxelwise RMSE (%) in white matter of the model on ``subjects`` (deterministic when ``n_samples=1``)."""
    se, n = 0.0, 0
    for s in subjects:
        x, mwf_frac, mask = _subject_tensors(model, s, drop)
        mean, _ = predict(model, x, mwf_frac, n_samples=n_samples, device="cpu")
        err = mean[s.wm] - 100.0 * s.target[s.wm]
        se += float((err.astype(np.float64) ** 2).sum())
        n += int(s.wm.sum())
    return math.sqrt(se / max(n, 1))


def calibrate_uncertainty(model: FusionModel, subjects: Sequence[FusionSubject], n_samples: int = 8) -> float:
    """Scale making the mean MC-dropout variance equal the mean squared error in WM of ``subjects``."""
    old = model.card["uncertainty"].get("calibration_scale", 1.0)
    model.card["uncertainty"]["calibration_scale"] = 1.0
    se, var = 0.0, 0.0
    for s in subjects:
        x, mwf_frac, mask = _subject_tensors(model, s)
        mean, sd = predict(model, x, mwf_frac, n_samples=n_samples, device="cpu")
        se += float(((mean[s.wm] - 100 * s.target[s.wm]) ** 2).sum())
        var += float((sd[s.wm].astype(np.float64) ** 2).sum())
    model.card["uncertainty"]["calibration_scale"] = old
    return float(math.sqrt(se / var)) if var > 0 else 1.0


def _design(inputs: Mapping[str, np.ndarray], sel: np.ndarray, channels: Sequence[str], quadratic: bool) -> np.ndarray:
    cols = [np.asarray(inputs[c], dtype=np.float64)[sel] for c in channels]
    feats = [np.ones_like(cols[0])] + cols
    if quadratic:
        for i in range(len(cols)):
            for j in range(i, len(cols)):
                feats.append(cols[i] * cols[j])
    return np.stack(feats, axis=1)


def fit_regression(subjects: Sequence[FusionSubject], channels: Sequence[str], quadratic: bool = False) -> list[float]:
    """Least-squares regression of the reference MWF (%) on ``channels`` over white matter.

    ``quadratic=False``: :math:`\\beta_0 + \\sum_c \\beta_c x_c`; ``quadratic=True``: the full second-order
    polynomial (squares and cross products), as in the quadratic combination of the original method.
    """
    X = np.concatenate([_design(s.inputs, s.wm, channels, quadratic) for s in subjects])
    y = np.concatenate([100.0 * s.target[s.wm] for s in subjects])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef.tolist()


def apply_regression(inputs: Mapping[str, np.ndarray], coef: Sequence[float], channels: Sequence[str],
                     quadratic: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
    """Evaluate a regression from :func:`fit_regression` (MWF %) on ``mask`` (default everywhere)."""
    shape = np.shape(inputs[channels[0]])
    sel = np.ones(shape, bool) if mask is None else mask
    out = np.zeros(shape, np.float64)
    out[sel] = _design(inputs, sel, channels, quadratic) @ np.asarray(coef)
    return out


def subject_metrics(pred_percent: np.ndarray, s: FusionSubject) -> dict:
    """Errors of a prediction (MWF %) against the subject's reference, all in MWF percentage points.

    * ``wm_rmse``: voxelwise RMSE over white matter;
    * ``tract_mean_abs_error_max`` / ``_mean``: absolute error of the mean over each tract's white matter
      (tracts with >= 10 voxels, lesions excluded);
    * ``lesion_deficit_*`` and ``nawm_deficit_*``: the contrast ``mean(normal WM) - mean(lesion)`` (and of
      the NAWM-demyelination tract), estimated vs true, and the relative error of the estimated deficit.
      Normal WM excludes lesions and the demyelinated tract.
    """
    truth = 100.0 * s.target
    out = {"wm_rmse": float(np.sqrt(np.mean((pred_percent[s.wm] - truth[s.wm]) ** 2))), "wm_n": int(s.wm.sum())}
    normal = s.wm.copy()
    for m in (s.lesion, s.nawm):
        if m is not None:
            normal &= ~m
    if s.labels is not None:
        errs = []
        for lab in np.unique(s.labels[s.wm]):
            if lab <= 0:
                continue
            sel = s.wm & (s.labels == lab)
            if s.lesion is not None:
                sel &= ~s.lesion
            if sel.sum() >= 10:
                errs.append(abs(pred_percent[sel].mean() - truth[sel].mean()))
        out["tract_mean_abs_error_max"] = float(max(errs)) if errs else float("nan")
        out["tract_mean_abs_error_mean"] = float(np.mean(errs)) if errs else float("nan")
    for key, m in (("lesion", s.lesion), ("nawm", s.nawm)):
        if m is not None and m.sum() >= 5 and normal.sum() >= 5:
            true_def = truth[normal].mean() - truth[m].mean()
            est_def = pred_percent[normal].mean() - pred_percent[m].mean()
            out[f"{key}_deficit_true"] = float(true_def)
            out[f"{key}_deficit_est"] = float(est_def)
            out[f"{key}_deficit_rel_error"] = float(abs(est_def - true_def) / max(abs(true_def), 1e-6))
    return out

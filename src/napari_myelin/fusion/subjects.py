"""Fusion subjects: one training or evaluation subject on one grid, and what is read from subjects directly.

A :class:`FusionSubject` holds the estimated maps in network units (``mwf`` fraction, ``fa``, ``mk``,
``qpm`` fraction, ``qsm`` ppm), the reference MWF (fraction) and the masks that training and evaluation
use (brain, white matter, tract labels, lesions, normal-appearing white-matter demyelination).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from napari_myelin.fusion.card import FusionModel
from napari_myelin.fusion.inputs import prepare_inputs


@dataclass
class FusionSubject:
    """One training/evaluation subject on one grid.

    ``inputs`` holds the estimated maps in network units (``mwf`` fraction, ``fa``, ``mk``, ``qpm``,
    ``qsm`` ppm), ``target`` the reference MWF (fraction), ``mask`` the brain mask, ``wm`` white matter;
    ``labels`` (tract labels), ``lesion`` and ``nawm`` are optional masks used for evaluation.
    """

    inputs: dict[str, np.ndarray]
    target: np.ndarray
    mask: np.ndarray
    wm: np.ndarray
    name: str = "subject"
    labels: np.ndarray | None = None
    lesion: np.ndarray | None = None
    nawm: np.ndarray | None = None
    affine: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def normalisation_stats(subjects: Sequence[FusionSubject], channels: Sequence[str]) -> dict:
    """Mean and SD of each channel over the brain voxels of ``subjects``."""
    stats = {}
    for c in channels:
        vals = np.concatenate([s.inputs[c][s.mask].astype(np.float64) for s in subjects if c in s.inputs])
        stats[c] = {"mean": float(vals.mean()), "std": float(max(vals.std(), 1e-6))}
    return stats


def _subject_tensors(model: FusionModel, s: FusionSubject, drop: Sequence[str] = ()):
    maps = {c: (None if c in drop else s.inputs.get(c)) for c in model.channels}
    x, mwf_frac, mask, _ = prepare_inputs(maps, model, mask=s.mask)
    return x, mwf_frac, mask

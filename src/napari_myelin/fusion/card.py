"""The fusion model: the network with its JSON model card (inputs, units, normalisation, training, metrics).

The card names the channels the network reads, in network order, and their units: ``mwf`` fraction 0-1,
``fa`` fraction 0-1, ``mk`` dimensionless, ``qpm`` the QPM myelin (macromolecular) fraction 0-1,
``qsm`` ppm, ``mtsat`` MT saturation in p.u. (percent units, Helms 2008), ``chi_dia`` the diamagnetic
susceptibility magnitude of chi-separation in ppm (>= 0, ``chi = chi_para - chi_dia``); which of them are
optional (each with a presence flag channel); the per-channel normalisation statistics and plausible
ranges; the architecture (width, dropout, ``skip_sigma_voxels``) and the uncertainty calibration.

Card format 3 adds the optional ``mtsat`` and ``chi_dia`` channels and stores the plausible range of each
channel; format 2 cards (the 0.2 weights: MWF, FA, MK, QPM and an optional QSM) are read as before, with
the ranges of :data:`PLAUSIBLE`; format 1 (an additive residual) is refused. Both formats describe the
gain-offset output on the input MWF. Weights and card are stored side by side, ``W.safetensors`` +
``W.json`` (:mod:`napari_myelin.fusion.weights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from napari_myelin.fusion.network import _torch, make_net, n_parameters
from napari_myelin.utils.errors import InputError

#: All channels a fusion model may read, in network order.
CHANNELS = ("mwf", "fa", "mk", "qpm", "qsm", "mtsat", "chi_dia")
#: Channels that may be missing at inference (handled with a presence flag).
OPTIONAL_CHANNELS = ("qsm", "mtsat", "chi_dia")
#: Units of each channel as the network reads it.
CHANNEL_UNITS = {"mwf": "fraction", "fa": "fraction", "mk": "dimensionless", "qpm": "fraction", "qsm": "ppm",
                 "mtsat": "p.u.", "chi_dia": "ppm (diamagnetic magnitude, >= 0)"}
#: Plausible range of the central 98 % of brain voxels of each channel other than MWF, in network units (for
#: unit checks; stored in format-3 cards). MTsat: brain 0.3-4 p.u. at 3 T (Helms et al. 2008; Weiskopf et al.
#: 2013); chi_dia: 0-0.1 ppm in brain (Shin et al. 2021; white matter about 0.03 ppm).
PLAUSIBLE = {"fa": (0.0, 1.05), "mk": (-0.5, 4.0), "qpm": (-0.2, 1.2), "qsm": (-1.0, 1.0), "mtsat": (-0.5, 8.0),
             "chi_dia": (-0.02, 0.3)}

MODEL_NAME = "napari-myelin FusionNet"
#: Card format 3: optional MTsat and chi_dia channels, plausible ranges in the card (gain-offset output on
#: the input MWF, as format 2).
CARD_FORMAT = 3
#: Card formats this version reads: 2 (read as before: no MTsat / chi_dia channel) and 3.
READABLE_FORMATS = (2, 3)


def default_weights_path() -> Path:
    """The shipped weights (trained on a phantom cohort processed by the project's estimators and registered
    to the 2 mm MNI template like a subject); their model card lies beside them."""
    return Path(__file__).resolve().parent.parent / "data" / "fusion" / "fusion_default.safetensors"


def card_path(weights: str | os.PathLike) -> Path:
    """The JSON model card that belongs to ``weights`` (same stem, ``.json``)."""
    weights = Path(weights)
    return weights.with_suffix(".json")


@dataclass
class FusionModel:
    """A fusion network with its model card (inputs, normalisation, training, metrics)."""

    net: Any
    card: dict

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.card["inputs"]["channels"])

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(self.card["inputs"].get("optional", []))

    @property
    def in_channels(self) -> int:
        return len(self.channels) + 1 + len(self.optional)

    def plausible(self, channel: str) -> tuple[float, float]:
        """Plausible range of the central 98 % of brain voxels of ``channel`` (the card's, else :data:`PLAUSIBLE`)."""
        lo, hi = self.card["inputs"].get("plausible_ranges", {}).get(channel, PLAUSIBLE[channel])
        return float(lo), float(hi)

    @property
    def skip_sigma(self) -> float:
        """Gaussian SD (voxels) of the MWF that the gain and offset apply to (0: the MWF as given)."""
        return float(self.card["architecture"].get("skip_sigma_voxels", 0.0))


def new_model(
    channels: Sequence[str] = CHANNELS, *, width: int = 8, dropout: float = 0.1, skip_sigma: float = 0.0,
    normalisation: Mapping[str, Mapping[str, float]] | None = None, voxel_size_mm: float | Sequence[float] = 2.0,
    seed: int = 0,
) -> FusionModel:
    """An untrained model whose card lists ``channels`` (optional ones get a presence flag)."""
    torch = _torch()
    channels = tuple(channels)
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or "mwf" not in channels:
        raise InputError(f"channels {list(channels)}: fusion reads {list(CHANNELS)} and needs 'mwf'.")
    optional = tuple(c for c in channels if c in OPTIONAL_CHANNELS)
    norm = {c: {"mean": 0.0, "std": 1.0} for c in channels}
    if normalisation:
        norm.update({c: {"mean": float(v["mean"]), "std": float(v["std"])} for c, v in normalisation.items()})
    torch.manual_seed(seed)
    net = make_net(len(channels) + 1 + len(optional), width=width, dropout=dropout)
    from napari_myelin import __version__

    card = {
        "format": CARD_FORMAT,
        "model": MODEL_NAME,
        "architecture": {"width": width, "dropout": dropout, "levels": 2, "parameters": n_parameters(net),
                         "in_channels": len(channels) + 1 + len(optional),
                         "output": "(1 + gain) * MWF_skip (%) + offset, gain and offset from the network",
                         "skip_sigma_voxels": float(skip_sigma)},
        "inputs": {
            "channels": list(channels),
            "optional": list(optional),
            "units": {c: CHANNEL_UNITS[c] for c in channels},
            "plausible_ranges": {c: list(PLAUSIBLE[c]) for c in channels if c in PLAUSIBLE},
            "extra_channels": ["brain mask"] + [f"{c} presence flag (brain mask when given, else 0)" for c in optional],
            "voxel_size_mm": np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,)).tolist(),
        },
        "normalisation": norm,
        "output": {"imwf": "integrated myelin water fraction, %", "imwf_sd": "MC-dropout standard deviation, %"},
        "uncertainty": {"method": "MC dropout", "n_samples": 8, "calibration_scale": 1.0},
        "software": {"name": "napari-myelin", "version": __version__, "torch": torch.__version__},
    }
    return FusionModel(net, card)

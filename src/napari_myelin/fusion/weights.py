"""Fusion weights on disk: safetensors tensors (never pickle) beside the JSON model card, and training checkpoints.

A model is two files of one stem, ``W.safetensors`` (the network's state) and ``W.json`` (its card, see
:mod:`napari_myelin.fusion.card`); both are written atomically. :func:`load_model` refuses a card of
another model or format and tensors that do not match the card. A resumable training checkpoint is a
folder holding ``checkpoint.safetensors`` (current weights, best weights, Adam state) and
``checkpoint.json`` (epoch, early-stopping counters, history, optimizer settings, card).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from napari_myelin.fusion.card import (CARD_FORMAT, MODEL_NAME, READABLE_FORMATS, FusionModel, card_path,
                                       default_weights_path, new_model)
from napari_myelin.fusion.network import _torch
from napari_myelin.utils.errors import InputError


def save_model(model: FusionModel, weights: str | os.PathLike) -> Path:
    """Write ``weights`` (safetensors) and its model card (JSON), each atomically."""
    from safetensors.torch import save as st_save

    from napari_myelin.io.volume import atomic_write_bytes

    weights = Path(weights)
    if weights.suffix != ".safetensors":
        weights = weights.with_name(weights.name + ".safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    atomic_write_bytes(weights, st_save(state, metadata={"model": MODEL_NAME, "format": str(CARD_FORMAT)}))
    atomic_write_bytes(card_path(weights), json.dumps(model.card, indent=2, default=_json_default).encode())
    return weights


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def load_model(weights: str | os.PathLike | None = None, device: str | None = None) -> FusionModel:
    """Load weights (safetensors, no pickle) and their model card; ``None`` loads the shipped weights.

    Raises
    ------
    InputError
        Missing files, a card that is not a fusion model card, or tensors that do not match the card.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = default_weights_path() if weights is None else Path(weights)
    if not weights.exists():
        raise InputError(f"{weights}: weights file not found; give a .safetensors file written by train-fusion.")
    card_file = card_path(weights)
    if not card_file.exists():
        raise InputError(f"{weights}: its model card {card_file.name} is missing; keep the JSON card beside the weights.")
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{card_file}: the model card is not valid JSON ({exc}); restore it.") from None
    if card.get("model") != MODEL_NAME or "inputs" not in card or "normalisation" not in card:
        raise InputError(f"{card_file}: not a napari-myelin fusion model card; use weights written by train-fusion.")
    if card.get("format") not in READABLE_FORMATS:
        raise InputError(
            f"{card_file}: model card format {card.get('format')}, this napari-myelin reads formats 2 and 3 "
            "(gain-offset output on the input MWF); retrain the weights with train-fusion."
        )
    arch = card.get("architecture", {})
    channels = list(card["inputs"].get("channels", []))
    try:
        model = new_model(channels, width=int(arch.get("width", 8)), dropout=float(arch.get("dropout", 0.1)),
                          skip_sigma=float(arch.get("skip_sigma_voxels", 0.0)), normalisation=card["normalisation"])
    except InputError as exc:
        raise InputError(f"{card_file}: {exc}") from None
    model.card = card
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{weights}: cannot be read as safetensors ({exc}); copy the weights again.") from None
    expected = model.net.state_dict()
    bad = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    extra = [k for k in state if k not in expected]
    if bad or extra:
        raise InputError(
            f"{weights}: the tensors do not match its model card ({len(bad)} missing or misshaped, {len(extra)} "
            "unexpected); use the card that was written with these weights."
        )
    model.net.load_state_dict(state)
    model.net.eval()
    if device:
        model.net.to(device)
    return model


def _optimizer_state(opt) -> tuple[dict, dict]:
    torch = _torch()
    tensors, meta = {}, {"param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v.detach().cpu().clone() if torch.is_tensor(v) else torch.tensor(v)
    return tensors, meta


def _load_optimizer_state(opt, tensors: dict, meta: dict) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for key, v in tensors.items():
        if not key.startswith("opt."):
            continue
        _, i, k = key.split(".", 2)
        state.setdefault(int(i), {})[k] = v
    for g, saved in zip(sd["param_groups"], meta.get("param_groups", [])):
        g.update({k: v for k, v in saved.items() if k != "params"})
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(folder: str | os.PathLike, model: FusionModel, opt, state: dict, best_state: dict | None) -> None:
    """Resumable checkpoint: ``checkpoint.safetensors`` (weights, best weights, optimizer) + ``checkpoint.json``."""
    from safetensors.torch import save as st_save

    from napari_myelin.io.volume import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    opt_t, opt_meta = _optimizer_state(opt)
    tensors.update({k: v.contiguous() for k, v in opt_t.items()})
    atomic_write_bytes(folder / "checkpoint.safetensors", st_save(tensors))
    payload = {"state": state, "optimizer": opt_meta, "card": model.card}
    atomic_write_bytes(folder / "checkpoint.json", json.dumps(payload, indent=2, default=_json_default).encode())


def _load_checkpoint(folder: Path, model: FusionModel, opt) -> tuple[dict, dict | None]:
    from safetensors.torch import load_file

    payload = json.loads((folder / "checkpoint.json").read_text())
    if payload["card"]["inputs"] != model.card["inputs"] or payload["card"]["architecture"] != model.card["architecture"]:
        raise InputError(f"{folder}: the checkpoint was written for other inputs or another network; use a new --checkpoint folder.")
    tensors = load_file(str(folder / "checkpoint.safetensors"))
    model.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    _load_optimizer_state(opt, tensors, payload["optimizer"])
    return payload["state"], best


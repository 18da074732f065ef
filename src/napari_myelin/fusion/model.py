"""CNN fusion: one integrated myelin map in MWF (%) from MWF, FA, MK, the QPM myelin map and (optionally) QSM.

A compact 3D U-Net (:class:`FusionNet`, two resolution levels, ~10^5 parameters) reads the quantitative
maps on one grid and predicts the myelin water fraction in percent. Each input channel ``c`` is
normalised with the statistics stored in the model card,

.. math:: \\tilde x_c = (x_c - \\mu_c) / \\sigma_c ,

inside the brain mask (``0`` outside). The network also receives the brain mask and, for every optional
channel (QSM), a *presence flag* channel (1 where the map was given, 0 where it was not). Training drops
the optional channel at random (its normalised values set to 0 **and** its flag to 0), so a missing QSM is
an explicit, trained-for condition rather than a silent zero. The network predicts a per-voxel gain
:math:`g_\\theta` and offset :math:`b_\\theta` applied to the input MWF averaged over a small Gaussian
neighbourhood (:func:`skip_mwf`, SD ``skip_sigma_voxels`` in the card): a multiplicative bias correction
in which the MWF passes straight to the output, so local contrast such as a lesion is rescaled rather than
re-synthesised from down-sampled features, while the voxel noise of the NNLS fit is averaged first,

.. math:: \\mathrm{iMWF}(\\%) = (1 + g_\\theta(\\tilde x))\\,100\\,\\overline{\\mathrm{MWF}}_{in} + b_\\theta(\\tilde x),

and the per-voxel uncertainty is the standard deviation of ``n_samples`` Monte-Carlo dropout passes
(Gal & Ghahramani 2016) through a dropout layer placed before the 1x1 output convolution (the body runs
once, so 8 samples cost little more than one pass), multiplied by a calibration factor fitted on the validation subjects so that the
mean predicted variance equals the mean squared error there (stored in the model card).

Network input units (the model card repeats them): ``mwf`` fraction 0-1 (a map in percent is detected
and converted, see :func:`detect_mwf_unit`), ``fa`` fraction 0-1, ``mk`` dimensionless, ``qpm`` the QPM
myelin (macromolecular) fraction 0-1, ``qsm`` ppm. Output ``imwf`` and ``imwf_sd`` in percent.

Weights are stored with :mod:`safetensors` (never pickle) beside a JSON model card of the same stem
(``W.safetensors`` + ``W.json``).

References
----------
Ronneberger O, Fischer P, Brox T. U-Net. MICCAI 2015 (3D variant: Cicek et al. 2016).
Gal Y, Ghahramani Z. Dropout as a Bayesian approximation. ICML 2016.
MacKay A et al. In vivo visualization of myelin water in brain by magnetic resonance. MRM 1994.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import step, subrange

#: All channels a fusion model may read, in network order.
CHANNELS = ("mwf", "fa", "mk", "qpm", "qsm")
#: Channels that may be missing at inference (handled with a presence flag).
OPTIONAL_CHANNELS = ("qsm",)
#: Units of each channel as the network reads it.
CHANNEL_UNITS = {"mwf": "fraction", "fa": "fraction", "mk": "dimensionless", "qpm": "fraction", "qsm": "ppm"}
#: Plausible ranges of the central 98 % of brain voxels (for unit checks), in network units.
_PLAUSIBLE = {"fa": (0.0, 1.05), "mk": (-0.5, 4.0), "qpm": (-0.2, 1.2), "qsm": (-1.0, 1.0)}

MODEL_NAME = "napari-myelin FusionNet"
#: Card format 2: gain-offset output on the input MWF (format 1, an additive residual, is refused).
CARD_FORMAT = 2


def _torch():
    import torch

    return torch


def default_weights_path() -> Path:
    """The shipped weights (trained on a phantom cohort processed by the project's estimators and registered
    to the 2 mm MNI template like a subject); their model card lies beside them."""
    return Path(__file__).resolve().parent.parent / "data" / "fusion" / "fusion_default.safetensors"


def card_path(weights: str | os.PathLike) -> Path:
    """The JSON model card that belongs to ``weights`` (same stem, ``.json``)."""
    weights = Path(weights)
    return weights.with_suffix(".json")


# --------------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------------


def _build_net_class():
    torch = _torch()
    nn = torch.nn

    class _Block(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            # BatchNorm with running statistics at inference: the output of a voxel does not depend on the
            # field of view (GroupNorm/InstanceNorm would normalise with whole-volume statistics).
            self.body = nn.Sequential(
                nn.Conv3d(cin, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.LeakyReLU(0.1, inplace=True),
                nn.Conv3d(cout, cout, 3, padding=1),
                nn.BatchNorm3d(cout),
                nn.LeakyReLU(0.1, inplace=True),
            )

        def forward(self, x):
            return self.body(x)

    class FusionNet(nn.Module):
        """Two-level 3D U-Net with MC dropout before the output layer and a gain-offset output on the input MWF.

        Parameters
        ----------
        in_channels : int
            Normalised maps + brain mask + presence flags.
        width : int
            Feature maps at full resolution (doubled at each level).
        dropout : float
            Dropout probability on the last feature maps (kept on at inference for MC-dropout uncertainty:
            the network body runs once, the dropout + 1x1 output layer ``n_samples`` times).
        """

        def __init__(self, in_channels: int, width: int = 8, dropout: float = 0.1):
            super().__init__()
            w = width
            self.enc1 = _Block(in_channels, w)
            self.enc2 = _Block(w, 2 * w)
            self.bottom = _Block(2 * w, 4 * w)
            self.pool = nn.MaxPool3d(2)
            self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2)
            self.dec2 = _Block(4 * w, 2 * w)
            self.up1 = nn.ConvTranspose3d(2 * w, w, 2, stride=2)
            self.dec1 = _Block(2 * w, w)
            self.drop = nn.Dropout(dropout)
            self.head = nn.Conv3d(w, 2, 1)  # gain g and offset b (MWF %)

        def encode(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            b = self.bottom(self.pool(e2))
            return e1, e2, b

        def features(self, x):
            e1, e2, b = self.encode(x)
            d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
            return self.dec1(torch.cat([self.up1(d2), e1], dim=1))

        def output(self, feats, mwf_percent):
            """``(1 + g) MWF% + b`` with ``(g, b)`` the 1x1 head of ``feats`` (shape ``(N, w, X, Y, Z)``)."""
            gb = self.head(feats)
            return (1.0 + gb[:, :1]) * mwf_percent + gb[:, 1:]

        def forward(self, x, mwf_percent):
            return self.output(self.drop(self.features(x)), mwf_percent)

    return FusionNet


_NET_CLASS = None


def make_net(in_channels: int, width: int = 8, dropout: float = 0.1):
    """A new :class:`FusionNet` (torch module)."""
    global _NET_CLASS
    if _NET_CLASS is None:
        _NET_CLASS = _build_net_class()
    return _NET_CLASS(in_channels, width=width, dropout=dropout)


def n_parameters(net) -> int:
    return int(sum(p.numel() for p in net.parameters()))


# --------------------------------------------------------------------------------------------------
# model = network + card
# --------------------------------------------------------------------------------------------------


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

    @property
    def skip_sigma(self) -> float:
        """Gaussian SD (voxels) of the MWF that the gain and offset apply to (0: the MWF as given)."""
        return float(self.card["architecture"].get("skip_sigma_voxels", 0.0))


def skip_mwf(mwf_fraction: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The MWF the network's gain and offset apply to: a Gaussian average inside the brain mask,

    .. math:: \\bar m = \\frac{G_\\sigma * (m\\,M)}{G_\\sigma * M}\\ \\text{in } M,\\ 0 \\text{ outside},

    with :math:`M` the mask and :math:`\\sigma` in voxels (``sigma=0`` returns the MWF masked). Averaging
    first keeps the voxel noise of the NNLS MWF out of the multiplicative path while blobs of a few voxels
    (lesions) keep most of their contrast.
    """
    from scipy.ndimage import gaussian_filter

    mask = np.asarray(mask, bool)
    m = np.where(mask, mwf_fraction, 0.0).astype(np.float32)
    if sigma <= 0:
        return m
    num = gaussian_filter(m, sigma, mode="constant")
    den = gaussian_filter(mask.astype(np.float32), sigma, mode="constant")
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


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
            "extra_channels": ["brain mask"] + [f"{c} presence flag (brain mask when given, else 0)" for c in optional],
            "voxel_size_mm": np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,)).tolist(),
        },
        "normalisation": norm,
        "output": {"imwf": "integrated myelin water fraction, %", "imwf_sd": "MC-dropout standard deviation, %"},
        "uncertainty": {"method": "MC dropout", "n_samples": 8, "calibration_scale": 1.0},
        "software": {"name": "napari-myelin", "version": __version__, "torch": torch.__version__},
    }
    return FusionModel(net, card)


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
    if card.get("format") != CARD_FORMAT:
        raise InputError(
            f"{card_file}: model card format {card.get('format')}, this napari-myelin reads format {CARD_FORMAT} "
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


# --------------------------------------------------------------------------------------------------
# inputs: units, grids, normalisation
# --------------------------------------------------------------------------------------------------


def detect_mwf_unit(mwf: np.ndarray, mask: np.ndarray | None = None) -> str:
    """Whether an MWF map is a fraction (0-1) or in percent (0-100).

    Myelin water fractions in brain lie below ~0.4 (40 %); a map whose 99th percentile inside the mask
    exceeds 1.5 cannot be a fraction, so it is read as percent.

    Returns
    -------
    str
        ``"fraction"`` or ``"percent"``.
    """
    vals = np.asarray(mwf, dtype=float)
    vals = vals[mask] if mask is not None else vals.ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return "fraction"
    return "percent" if np.percentile(vals, 99) > 1.5 else "fraction"


_UNIT_ALIASES = {"%": "percent", "percent": "percent", "pct": "percent", "fraction": "fraction", "1": "fraction",
                 "ratio": "fraction", "a.u.": None, "": None}


def _declared_unit(units: str | None) -> str | None:
    if units is None:
        return None
    return _UNIT_ALIASES.get(str(units).strip().lower())


def check_grids(volumes: Mapping[str, Any]) -> None:
    """Refuse channels that do not share one grid (shape and affine).

    ``volumes`` maps a channel name to a :class:`~napari_myelin.io.volume.Volume` or an array.
    """
    ref_name, ref = None, None
    for name, v in volumes.items():
        if v is None:
            continue
        shape = tuple(np.shape(getattr(v, "data", v)))[:3]
        affine = getattr(v, "affine", None)
        if len(np.shape(getattr(v, "data", v))) != 3:
            raise InputError(f"{name}: the map has shape {np.shape(getattr(v, 'data', v))}; fusion needs one 3D map per channel.")
        if ref is None:
            ref_name, ref = name, (shape, affine)
            continue
        if shape != ref[0]:
            raise InputError(
                f"{name}: its grid {shape} differs from {ref_name} {ref[0]}; register all maps to one grid first "
                "(napari-myelin register)."
            )
        if affine is not None and ref[1] is not None and not np.allclose(affine, ref[1], atol=1e-3):
            raise InputError(
                f"{name}: its affine differs from {ref_name}'s; the maps lie on different grids, register them to "
                "one grid first (napari-myelin register)."
            )


def prepare_inputs(
    maps: Mapping[str, np.ndarray | None],
    model: FusionModel,
    *,
    mask: np.ndarray | None = None,
    units: Mapping[str, str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Check units against the model card and build the normalised network input.

    Parameters
    ----------
    maps : mapping
        ``mwf`` (fraction or percent, detected), ``fa``, ``mk``, ``qpm`` and optionally ``qsm`` (ppm),
        3D arrays on one grid.
    model : FusionModel
    mask : ndarray of bool, optional
        Brain mask; default: voxels where every given map is finite and FA or MWF is non-zero.
    units : mapping, optional
        Declared units per channel (e.g. from sidecars or layer metadata); a declared MWF unit that
        contradicts the values raises.

    Returns
    -------
    x : ndarray, shape (C, X, Y, Z), float32
        Normalised channels, brain mask, presence flags.
    mwf_fraction : ndarray, float32
        The MWF input as a fraction (zero outside the mask).
    mask : ndarray of bool
    info : dict
        ``mwf_input_unit`` and the channels present.
    """
    units = dict(units or {})
    card = model.card
    channels = model.channels
    missing = [c for c in channels if c not in model.optional and maps.get(c) is None]
    if missing:
        raise InputError(f"{', '.join(missing)}: required by these fusion weights but not given; add --{missing[0]}.")
    surplus = [c for c in CHANNELS if maps.get(c) is not None and c not in channels]
    if surplus:
        raise InputError(
            f"{surplus[0]}: given, but the model card of these weights has no {surplus[0]} channel (inputs "
            f"{list(channels)}); drop it or use weights trained with it."
        )
    check_grids({c: maps.get(c) for c in channels})
    arrays = {c: np.asarray(maps[c], dtype=np.float32) for c in channels if maps.get(c) is not None}
    shape = arrays["mwf"].shape
    finite = np.ones(shape, bool)
    for a in arrays.values():
        finite &= np.isfinite(a)
    if mask is None:
        mask = finite & ((arrays["fa"] > 0) if "fa" in arrays else (arrays["mwf"] != 0))
    else:
        mask = np.asarray(mask, bool)
        if mask.shape != shape:
            raise InputError(f"mask: its grid {mask.shape} differs from the maps' {shape}; give a mask on the same grid.")
        mask = mask & finite
    if mask.sum() < 10:
        raise InputError("mask: fewer than 10 brain voxels hold finite values in every map; check the inputs.")
    detected = detect_mwf_unit(arrays["mwf"], mask)
    declared = _declared_unit(units.get("mwf"))
    if declared is not None and declared != detected:
        p99 = float(np.percentile(arrays["mwf"][mask], 99))
        raise InputError(
            f"mwf: declared in {declared} but its values (99th percentile {p99:.3g}) look like a {detected}; "
            "fix the Units of the map or give the other one."
        )
    mwf = arrays["mwf"] / 100.0 if detected == "percent" else arrays["mwf"]
    arrays["mwf"] = mwf
    for c, a in arrays.items():
        if c == "mwf":
            continue
        lo, hi = np.percentile(a[mask], [1, 99])
        plo, phi = _PLAUSIBLE[c]
        st = card["normalisation"][c]
        if lo < plo - 0.5 * abs(plo) - 1e-6 or hi > phi * 1.5 or abs(np.median(a[mask]) - st["mean"]) > 8 * st["std"]:
            raise InputError(
                f"{c}: values (1st-99th percentile {lo:.3g} to {hi:.3g}) do not match the model card, which expects "
                f"{CHANNEL_UNITS[c]} with mean {st['mean']:.3g}; check the map's units and the weights."
            )
    n = len(channels) + 1 + len(model.optional)
    x = np.zeros((n,) + shape, np.float32)
    for i, c in enumerate(channels):
        if c in arrays:
            st = card["normalisation"][c]
            x[i] = np.where(mask, (arrays[c] - st["mean"]) / st["std"], 0.0)
    x[len(channels)] = mask
    for j, c in enumerate(model.optional):
        # presence flag inside the brain (everything is 0 outside, so zero padding = background)
        x[len(channels) + 1 + j] = mask if c in arrays else 0.0
    mwf_frac = np.where(mask, mwf, 0.0).astype(np.float32)
    info = {"mwf_input_unit": detected, "channels_present": sorted(arrays)}
    return x, mwf_frac, mask, info


# --------------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------------


def _device(device: str | None) -> str:
    torch = _torch()
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pad4(t):
    torch = _torch()
    shape = t.shape[-3:]
    pads = [(-s) % 4 for s in shape]
    padding = []
    for p in reversed(pads):
        padding += [0, p]
    return torch.nn.functional.pad(t, padding), shape


def predict(
    model: FusionModel, x: np.ndarray, mwf_fraction: np.ndarray, *, n_samples: int = 8, device: str | None = None,
    progress=None, cancel=None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the network: mean and calibrated MC-dropout SD of the integrated MWF (%).

    The network body runs once; dropout + output layer ``n_samples`` times (``n_samples=1``: no dropout, SD 0).
    """
    torch = _torch()
    dev = _device(device)
    net = model.net.to(dev)
    net.eval()
    xt, shape = _pad4(torch.from_numpy(np.ascontiguousarray(x))[None].to(dev))
    skip = skip_mwf(mwf_fraction, x[len(model.channels)] > 0, model.skip_sigma)
    mt, _ = _pad4(torch.from_numpy(skip)[None, None].to(dev) * 100.0)
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            feats = net.features(xt)
            if n_samples <= 1:
                out = net.output(feats, mt)[0, 0]
                mean, sd = out, torch.zeros_like(out)
            else:
                net.drop.train()
                s1 = torch.zeros_like(mt[0, 0])
                s2 = torch.zeros_like(mt[0, 0])
                for i in range(n_samples):
                    step(progress, cancel, 0.1 + 0.9 * i / n_samples, f"MC-dropout sample {i + 1}/{n_samples}")
                    o = net.output(net.drop(feats), mt)[0, 0]
                    s1 += o
                    s2 += o * o
                mean = s1 / n_samples
                sd = torch.sqrt(torch.clamp(s2 / n_samples - mean * mean, min=0.0) * n_samples / (n_samples - 1))
                sd = sd * float(model.card.get("uncertainty", {}).get("calibration_scale", 1.0))
    finally:
        net.drop.eval()
        torch.set_rng_state(gen_state)
    sl = tuple(slice(0, s) for s in shape)
    return mean[sl].cpu().numpy(), sd[sl].cpu().numpy()


def _zoom_to(arr: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    from scipy.ndimage import zoom

    factors = [t / s for t, s in zip(shape, arr.shape)]
    out = zoom(np.asarray(arr, np.float32), factors, order=order, mode="nearest", grid_mode=True)
    return out


def fuse(
    mwf: np.ndarray,
    fa: np.ndarray,
    mk: np.ndarray,
    qpm: np.ndarray,
    qsm: np.ndarray | None = None,
    *,
    weights: str | os.PathLike | FusionModel | None = None,
    mask: np.ndarray | None = None,
    voxel_size_mm: Sequence[float] | float | None = None,
    units: Mapping[str, str | None] | None = None,
    n_samples: int | None = None,
    device: str | None = None,
    progress=None,
    cancel=None,
) -> Maps:
    """Integrated myelin map (MWF, %) and its uncertainty from co-registered quantitative maps.

    Parameters
    ----------
    mwf : ndarray
        Myelin water fraction (fraction 0-1 or percent 0-100: detected, see :func:`detect_mwf_unit`).
    fa : ndarray
        Fractional anisotropy (0-1).
    mk : ndarray
        Mean kurtosis (dimensionless).
    qpm : ndarray
        QPM myelin (macromolecular) fraction (0-1).
    qsm : ndarray, optional
        Susceptibility (ppm); when absent the model's presence flag says so.
    weights : path, FusionModel or None
        ``None``: the shipped weights (:func:`default_weights_path`).
    mask : ndarray of bool, optional
        Brain mask (default: finite voxels with FA > 0).
    voxel_size_mm : float or 3 floats, optional
        Voxel size of the inputs (mm); when its isotropic equivalent (cube root of the voxel volume)
        differs from the card's training voxel size by more than 25 %, the maps are resampled to the
        training voxel size, fused, and the result resampled back (linear). The shipped weights were
        trained on the 2 mm MNI template grid (where the subject pipeline fuses).
    units : mapping, optional
        Declared units per channel (checked against the values).
    n_samples : int, optional
        MC-dropout passes (default: the card's, 8).
    device : str, optional
        ``"cpu"`` or ``"cuda"`` (default: CUDA when available).

    Returns
    -------
    Maps
        ``imwf`` (%), ``imwf_sd`` (%) on the input grid (0 outside the mask).

    Raises
    ------
    InputError
        Grids differ, units are wrong, or the inputs do not match the model card.
    """
    step(progress, cancel, 0.0, "loading fusion weights")
    model = weights if isinstance(weights, FusionModel) else load_model(weights)
    maps = {"mwf": mwf, "fa": fa, "mk": mk, "qpm": qpm, "qsm": qsm}
    x, mwf_frac, mask, info = prepare_inputs(maps, model, mask=mask, units=units)
    shape = mwf_frac.shape
    trained_vs = np.broadcast_to(np.asarray(model.card["inputs"].get("voxel_size_mm", 2.0), dtype=float), (3,))
    resampled = False
    if voxel_size_mm is not None:
        vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,))
        if abs(np.cbrt(np.prod(vs)) / np.cbrt(np.prod(trained_vs)) - 1) > 0.25:
            new_shape = tuple(max(4, int(round(s * v / t))) for s, v, t in zip(shape, vs, trained_vs))
            x = np.stack([_zoom_to(c, new_shape, order=1) for c in x])
            mwf_frac = _zoom_to(mwf_frac, new_shape, order=1)
            resampled = True
    n = int(n_samples or model.card.get("uncertainty", {}).get("n_samples", 8))
    step(progress, cancel, 0.05, "running the fusion network")
    mean, sd = predict(model, x, mwf_frac, n_samples=n, device=device, progress=subrange(progress, 0.05, 0.95),
                       cancel=cancel)
    if resampled:
        mean, sd = _zoom_to(mean, shape, 1), _zoom_to(sd, shape, 1)
    mean = np.where(mask, np.clip(mean, 0.0, 100.0), 0.0).astype(np.float32)
    sd = np.where(mask, sd, 0.0).astype(np.float32)
    step(progress, cancel, 1.0, "fusion done")
    params = {
        "weights": str(weights) if isinstance(weights, (str, os.PathLike)) else
        ("shipped default" if weights is None else "in memory"),
        "n_samples": n, "resampled_to_training_voxel_size": resampled,
        "training_voxel_size_mm": trained_vs.tolist(),
        **info,
    }
    return Maps(
        {"imwf": mean, "imwf_sd": sd},
        units={"imwf": "%", "imwf_sd": "%"},
        descriptions={
            "imwf": "integrated myelin map (CNN fusion of MWF, FA, MK, QPM" + (", QSM" if qsm is not None else "")
            + ") expressed as myelin water fraction",
            "imwf_sd": "per-voxel uncertainty of the integrated myelin map (calibrated MC-dropout SD)",
        },
        method=MODEL_NAME,
        parameters=params,
    )


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------


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


def train_fusion(
    train: Sequence[FusionSubject],
    val: Sequence[FusionSubject],
    *,
    channels: Sequence[str] = CHANNELS,
    width: int = 8,
    dropout: float = 0.1,
    epochs: int = 40,
    steps_per_epoch: int = 40,
    batch_size: int = 4,
    patch: int = 32,
    lr: float = 2e-3,
    channel_dropout: float = 0.5,
    lesion_weight: float = 1.0,
    lesion_patch_fraction: float = 0.0,
    region_weight: float = 0.0,
    skip_sigma: float = 0.0,
    patience: int = 8,
    lr_patience: int = 3,
    seed: int = 0,
    voxel_size_mm: float | Sequence[float] = 2.0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    max_seconds: float | None = None,
    training_data: dict | None = None,
    progress=None,
    cancel=None,
) -> tuple[FusionModel, dict]:
    """Train a fusion network on subjects (target: reference MWF), with early stopping on validation subjects.

    Random ``patch``^3 crops (centred on brain voxels, random left-right flips) of the training subjects
    are fed in batches; the optional channels are dropped (values 0 and presence flag 0) with probability
    ``channel_dropout``. Loss: weighted mean squared error in percent over brain voxels,

    .. math:: L = \\sum_v w_v (\\hat y_v - y_v)^2 / \\sum_v w_v ,\\qquad
              w_v = \\begin{cases} 2\\,\\lambda & \\text{lesion or NAWM demyelination} \\\\
                                   2 & \\text{other white matter} \\\\ 1 & \\text{other brain} \\end{cases}

    with :math:`\\lambda` = ``lesion_weight`` and :math:`\\hat y` the network output (gain and offset applied
    to the MWF averaged with :func:`skip_mwf`, SD ``skip_sigma`` voxels). To this is added ``region_weight``
    times the mean, over patches and over the lesion and NAWM-demyelination regions :math:`r` present in a
    patch (>= 5 voxels), of the squared error of the region mean,
    :math:`(\\frac{1}{|r|}\\sum_{v \\in r} (\\hat y_v - y_v))^2` (it asks for the regional contrast
    without asking the noisy single voxels to follow it). A fraction
    ``lesion_patch_fraction`` of the patches of subjects with lesions is centred on a lesion or
    NAWM-demyelination voxel (the rest on brain voxels).
    After each epoch the validation RMSE in white matter decides early stopping (``patience`` epochs) and
    halves the learning rate after every ``lr_patience`` epochs without improvement (Adam);
    the best weights are returned. Every epoch writes a resumable checkpoint when ``checkpoint_dir`` is
    given; ``resume=True`` continues from it bit for bit (random streams are derived from
    ``(seed, epoch)``). ``max_seconds`` stops after the epoch that exceeds a time budget (then the run is
    no longer reproducible across machines of other speeds).

    Returns
    -------
    model : FusionModel
        Best weights, with the card filled (normalisation, training, metrics, uncertainty calibration).
    history : dict
        ``train_loss`` and ``val_rmse`` per epoch, ``best_epoch``, ``seconds`` (wall clock) and
        ``cpu_seconds`` (CPU time of this process: the wall time on an otherwise idle machine).
    """
    torch = _torch()
    if not train or not val:
        raise InputError("training set: needs at least one training and one validation subject.")
    names_t = {s.name for s in train}
    overlap = names_t & {s.name for s in val}
    if overlap:
        raise InputError(f"validation subjects {sorted(overlap)} are also training subjects; split by subject.")
    channels = tuple(c for c in channels if all(c in s.inputs for s in train))
    norm = normalisation_stats(train, channels)
    model = new_model(channels, width=width, dropout=dropout, skip_sigma=skip_sigma, normalisation=norm,
                      voxel_size_mm=voxel_size_mm, seed=seed)
    net = model.net
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    hist = {"train_loss": [], "val_rmse": [], "best_epoch": -1, "seconds": 0.0}
    best_state, best_val, start_epoch, bad_epochs = None, float("inf"), 0, 0
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if resume and ckpt is not None and (ckpt / "checkpoint.json").exists():
        st, best_state = _load_checkpoint(ckpt, model, opt)
        hist = st["history"]
        best_val, start_epoch, bad_epochs = st["best_val"], st["epoch"] + 1, st["bad_epochs"]
    prepared = []
    for s in train:
        x, mwf_frac, mask = _subject_tensors(model, s)
        mwf_frac = skip_mwf(mwf_frac, mask, model.skip_sigma)
        weight = np.where(s.wm, 2.0, 1.0) * mask
        regions = _pathology_regions(s)
        weight[regions > 0] *= lesion_weight
        focus = regions > 0 if regions.any() else None
        prepared.append((x, mwf_frac * 100.0, 100.0 * s.target.astype(np.float32), weight.astype(np.float32), s,
                         focus, regions))
    opt_idx = [i for i, c in enumerate(channels) if c in model.optional]
    flag0 = len(channels) + 1
    t0 = time.perf_counter() - hist.get("seconds", 0.0)
    c0 = time.process_time() - hist.get("cpu_seconds", 0.0)
    total = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        if bad_epochs >= patience:
            hist["stopped"] = "early stopping"
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            hist["stopped"] = "time budget"
            break
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 100003 + epoch)
        net.train()
        losses = []
        for it in range(steps_per_epoch):
            step(progress, cancel, (epoch * steps_per_epoch + it) / total,
                 f"epoch {epoch + 1}/{epochs}, best val RMSE {best_val:.2f} %")
            xb, mb, tb, wb, rb = [], [], [], [], []
            for _ in range(batch_size):
                x, m, t, w, s, focus, regions = prepared[rng.integers(len(prepared))]
                on_lesion = focus is not None and rng.random() < lesion_patch_fraction
                sl = _random_patch(focus if on_lesion else s.mask, patch, rng)
                xp, mp, tp, wp, rp = x[(slice(None),) + sl], m[sl], t[sl], w[sl], regions[sl]
                if rng.random() < 0.5:
                    xp, mp, tp, wp, rp = xp[:, ::-1], mp[::-1], tp[::-1], wp[::-1], rp[::-1]
                xp = xp.copy()
                for j, ci in enumerate(opt_idx):
                    if rng.random() < channel_dropout:
                        xp[ci] = 0.0
                        xp[flag0 + j] = 0.0
                xb.append(xp)
                mb.append(mp.copy()[None])
                tb.append(tp.copy()[None])
                wb.append(wp.copy()[None])
                rb.append(rp.copy()[None])
            xb, mb, tb, wb, rb = (torch.from_numpy(np.stack(a)) for a in (xb, mb, tb, wb, rb))
            out = net(xb, mb)
            loss = (wb * (out - tb) ** 2).sum() / wb.sum().clamp(min=1.0)
            if region_weight > 0:
                loss = loss + region_weight * _region_mean_sq_error(out - tb, rb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        val_rmse = evaluate_rmse(model, val)
        hist["train_loss"].append(float(np.mean(losses)))
        hist["val_rmse"].append(val_rmse)
        if val_rmse < best_val - 1e-4:
            best_val, bad_epochs, hist["best_epoch"] = val_rmse, 0, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs % lr_patience == 0:  # plateau: halve the learning rate
                for g in opt.param_groups:
                    g["lr"] *= 0.5
        hist["seconds"] = time.perf_counter() - t0
        hist["cpu_seconds"] = time.process_time() - c0
        if ckpt is not None:
            save_checkpoint(ckpt, model, opt,
                            {"epoch": epoch, "best_val": best_val, "bad_epochs": bad_epochs, "history": hist},
                            best_state)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    step(progress, cancel, 0.97, "calibrating the uncertainty on the validation subjects")
    model.card["uncertainty"]["calibration_scale"] = calibrate_uncertainty(model, val)
    hist["seconds"] = time.perf_counter() - t0
    hist["cpu_seconds"] = time.process_time() - c0
    model.card["training"] = {
        "seed": seed, "epochs_run": len(hist["val_rmse"]), "best_epoch": hist["best_epoch"],
        "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "patch": patch, "lr": lr,
        "channel_dropout": channel_dropout, "patience": patience, "lr_patience": lr_patience,
        "loss": f"weighted MSE (%) in brain: WM weight 2, lesion and NAWM demyelination 2 x {lesion_weight:g}; "
                f"+ {region_weight:g} x squared error of lesion / NAWM-demyelination region means per patch",
        "lesion_weight": lesion_weight, "lesion_patch_fraction": lesion_patch_fraction,
        "region_weight": region_weight,
        "stopped": hist.get("stopped", "epoch limit"), "max_seconds": max_seconds,
        "train_subjects": sorted(names_t), "validation_subjects": sorted(s.name for s in val),
        "seconds": round(hist["seconds"], 1), "cpu_seconds": round(hist["cpu_seconds"], 1),
        "torch_threads": torch.get_num_threads(), "machine": "2-core CPU dev container, no GPU",
        "data": training_data or {},
        "history": {"train_loss": hist["train_loss"], "val_rmse": hist["val_rmse"]},
    }
    model.card["metrics"] = {"validation_wm_rmse_percent": best_val}
    step(progress, cancel, 1.0, f"trained: validation RMSE {best_val:.2f} %")
    return model, hist


def _pathology_regions(s: FusionSubject) -> np.ndarray:
    """Region labels of ``s`` inside its brain mask: 1 lesion, 2 NAWM demyelination, 0 elsewhere (int8)."""
    regions = np.zeros(s.mask.shape, np.int8)
    for label, m in ((2, s.nawm), (1, s.lesion)):
        if m is not None:
            regions[m & s.mask] = label
    return regions


def _region_mean_sq_error(err, regions, min_voxels: int = 5):
    """Mean over (patch, region) of the squared error of the region mean, :math:`(\\overline{e}_{r})^2`.

    ``err`` and ``regions`` have shape ``(N, 1, X, Y, Z)``; regions (labels > 0) with fewer than
    ``min_voxels`` voxels in a patch are skipped. Returns a 0-d tensor (0 when no region is present).
    """
    terms = []
    for label in (1, 2):
        sel = (regions == label).to(err.dtype)
        n = sel.sum(dim=(1, 2, 3, 4))
        keep = n >= min_voxels
        if keep.any():
            mean = (err * sel).sum(dim=(1, 2, 3, 4))[keep] / n[keep]
            terms.append(mean ** 2)
    return _torch().cat(terms).mean() if terms else err.new_zeros(())


def _random_patch(mask: np.ndarray, patch: int, rng: np.random.Generator) -> tuple[slice, ...]:
    """A ``patch``^3 crop (clipped to the volume, multiple of 4) centred on a random voxel of ``mask``."""
    idx = np.flatnonzero(mask)
    centre = np.unravel_index(idx[rng.integers(idx.size)], mask.shape)
    sl = []
    for c, s in zip(centre, mask.shape):
        p = min(patch, s - s % 4) if s >= 4 else s
        lo = int(np.clip(c - p // 2, 0, s - p))
        sl.append(slice(lo, lo + p))
    return tuple(sl)


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


# --------------------------------------------------------------------------------------------------
# baselines and evaluation
# --------------------------------------------------------------------------------------------------


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


def fuse_native(
    volumes: Mapping[str, Any],
    registration,
    *,
    weights: str | os.PathLike | FusionModel | None = None,
    mask: np.ndarray | None = None,
    units: Mapping[str, str | None] | None = None,
    n_samples: int | None = None,
    device: str | None = None,
    progress=None,
    cancel=None,
) -> Maps:
    """Fuse native-space maps in template space: warp in, infer, warp the result back.

    Parameters
    ----------
    volumes : mapping
        ``mwf``, ``fa``, ``mk``, ``qpm`` (and optionally ``qsm``) as
        :class:`~napari_myelin.io.volume.Volume` on one native grid.
    registration : napari_myelin.align.registration.Registration
        Subject -> template registration (``register_to_template``) whose moving image lies in the maps'
        space; maps go in with ``registration.apply(..., "linear")`` and the results come back with
        ``registration.to_native(..., "linear")``.

    Returns
    -------
    Maps
        ``imwf``, ``imwf_sd`` (%) on the native grid of ``volumes["mwf"]``.
    """
    from napari_myelin.io.volume import Volume

    vols = {c: v for c, v in volumes.items() if v is not None}
    check_grids(vols)
    ref = vols["mwf"]
    step(progress, cancel, 0.0, "warping the maps to the template")
    mask_vol = None if mask is None else ref.with_data(np.asarray(mask, np.float32))
    warped = {c: registration.apply(v, "linear").data for c, v in vols.items()}
    tmask = None if mask_vol is None else registration.apply(mask_vol, "mask").data.astype(bool)
    res = fuse(**{c: warped.get(c) for c in CHANNELS}, weights=weights, mask=tmask,
               voxel_size_mm=registration.fixed.zooms, units=units, n_samples=n_samples, device=device,
               progress=subrange(progress, 0.1, 0.85), cancel=cancel)
    step(progress, cancel, 0.9, "warping the integrated map back to the subject")
    tmpl = registration.fixed
    native = {}
    for name in ("imwf", "imwf_sd"):
        back = registration.to_native(Volume(res[name], tmpl.affine.copy()), "linear")
        if back.shape[:3] != ref.shape[:3] or not np.allclose(back.affine, ref.affine, atol=1e-3):
            from napari_myelin.io.resample import resample_like

            arr = resample_like(back, ref, order=1, name=name)
        else:
            arr = back.data
        native[name] = np.asarray(arr, np.float32)
    native_mask = np.ones(ref.shape[:3], bool) if mask is None else np.asarray(mask, bool)
    native_mask &= np.isfinite(np.asarray(ref.data, float))
    for name in native:
        native[name] = np.where(native_mask, native[name], 0.0).astype(np.float32)
    step(progress, cancel, 1.0, "fusion done")
    params = dict(res.parameters, space="native (fused in template space, warped back)",
                  template_voxel_size_mm=np.asarray(tmpl.zooms).tolist(),
                  transforms=registration.transforms)
    return Maps(native, units=dict(res.units), descriptions=dict(res.descriptions), method=res.method,
                parameters=params)

"""Fusion inference: the network's mean and Monte-Carlo dropout uncertainty, on the template grid or natively.

The per-voxel uncertainty is the standard deviation of ``n_samples`` Monte-Carlo dropout passes
(Gal & Ghahramani 2016) through the dropout layer placed before the 1x1 output convolution (the body runs
once, so 8 samples cost little more than one pass), multiplied by the calibration factor of the model card
(fitted on the validation subjects so that the mean predicted variance equals the mean squared error there).
:func:`fuse` reads maps on one grid (resampled to the training voxel size when it differs by more than 25 %);
:func:`fuse_native` warps native maps to the template, fuses there and warps the result back. Outputs
``imwf`` and ``imwf_sd`` are in percent.

References
----------
Gal Y, Ghahramani Z. Dropout as a Bayesian approximation. ICML 2016.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from napari_myelin.fusion.card import CHANNELS, MODEL_NAME, FusionModel
from napari_myelin.fusion.inputs import check_grids, prepare_inputs
from napari_myelin.fusion.network import _torch, skip_mwf
from napari_myelin.fusion.weights import load_model
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import step, subrange


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
    mtsat: np.ndarray | None = None,
    chi_dia: np.ndarray | None = None,
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
    mtsat : ndarray, optional
        MT saturation (p.u., :func:`~napari_myelin.reconst.mtsat.fit_mtsat`); weights of card format 3 only.
    chi_dia : ndarray, optional
        Diamagnetic susceptibility magnitude (ppm, >= 0, :func:`~napari_myelin.reconst.chisep.separate_susceptibility`);
        weights of card format 3 only. A missing optional map is flagged absent, as the network was trained for.
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
    maps = {"mwf": mwf, "fa": fa, "mk": mk, "qpm": qpm, "qsm": qsm, "mtsat": mtsat, "chi_dia": chi_dia}
    x, mwf_frac, mask, info = prepare_inputs(maps, model, mask=mask, units=units)
    shape = mwf_frac.shape
    trained_vs = np.broadcast_to(np.asarray(model.card["inputs"].get("voxel_size_mm", 2.0), dtype=float), (3,))
    x, mwf_frac, resampled = _to_training_voxel_size(x, mwf_frac, voxel_size_mm, trained_vs)
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
    return _fusion_maps(mean, sd, present=info["channels_present"], parameters=params)


def _to_training_voxel_size(x: np.ndarray, mwf_frac: np.ndarray, voxel_size_mm: Sequence[float] | float | None,
                            trained_vs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The network input resampled (linear) to the card's training voxel size when the isotropic equivalent
    of ``voxel_size_mm`` differs from it by more than 25 %; also whether it was resampled."""
    if voxel_size_mm is not None:
        vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,))
        if abs(np.cbrt(np.prod(vs)) / np.cbrt(np.prod(trained_vs)) - 1) > 0.25:
            new_shape = tuple(max(4, int(round(s * v / t))) for s, v, t in zip(mwf_frac.shape, vs, trained_vs))
            return np.stack([_zoom_to(c, new_shape, order=1) for c in x]), _zoom_to(mwf_frac, new_shape, order=1), True
    return x, mwf_frac, False


_LABELS = {"mwf": "MWF", "fa": "FA", "mk": "MK", "qpm": "QPM", "qsm": "QSM", "mtsat": "MTsat", "chi_dia": "chi_dia"}


def _fusion_maps(mean: np.ndarray, sd: np.ndarray, *, present: Sequence[str], parameters: dict) -> Maps:
    """The integrated map and its uncertainty as :class:`~napari_myelin.io.maps.Maps` with units and descriptions."""
    return Maps(
        {"imwf": mean, "imwf_sd": sd},
        units={"imwf": "%", "imwf_sd": "%"},
        descriptions={
            "imwf": "integrated myelin map (CNN fusion of " + ", ".join(_LABELS[c] for c in CHANNELS if c in present)
            + ") expressed as myelin water fraction",
            "imwf_sd": "per-voxel uncertainty of the integrated myelin map (calibrated MC-dropout SD)",
        },
        method=MODEL_NAME,
        parameters=parameters,
    )


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
        ``mwf``, ``fa``, ``mk``, ``qpm`` (and optionally ``qsm``, ``mtsat``, ``chi_dia``) as
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

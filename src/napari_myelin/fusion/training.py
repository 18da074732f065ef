"""Fusion training: patches of the training subjects, Adam with early stopping on validation subjects,
resumable checkpoints, the uncertainty calibration and the training section of the model card.

:func:`train_fusion` runs as named steps: check the subject split, build an untrained model with the
training subjects' normalisation, resume from a checkpoint (if asked), prepare each subject (network input,
skip MWF, target and loss weights), run the epochs (random patch batches, weighted loss, validation RMSE,
plateau learning-rate halving, early stopping, checkpoint), restore the best weights, calibrate the
MC-dropout uncertainty and fill the card. Random streams are derived from ``(seed, epoch)``, so a resumed
run continues bit for bit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from napari_myelin.fusion.card import CHANNELS, FusionModel, new_model
from napari_myelin.fusion.evaluation import calibrate_uncertainty, evaluate_rmse
from napari_myelin.fusion.network import _torch, skip_mwf
from napari_myelin.fusion.subjects import FusionSubject, _subject_tensors, normalisation_stats
from napari_myelin.fusion.weights import _load_checkpoint, save_checkpoint
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step


@dataclass(frozen=True)
class _Settings:
    """The hyperparameters of :func:`train_fusion` that the loop and the model card read."""

    seed: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    patch: int
    lr: float
    channel_dropout: float
    patience: int
    lr_patience: int
    lesion_weight: float
    lesion_patch_fraction: float
    region_weight: float
    max_seconds: float | None


def _new_history() -> dict:
    """The history of a run that has not trained yet."""
    return {"train_loss": [], "val_rmse": [], "best_epoch": -1, "seconds": 0.0}


@dataclass
class _Run:
    """The state of a training run that a checkpoint keeps (history, best weights, early-stopping counters),
    with the wall-clock and CPU clocks started so that a resumed run adds to the saved times."""

    hist: dict = field(default_factory=_new_history)
    best_state: dict | None = None
    best_val: float = float("inf")
    start_epoch: int = 0
    bad_epochs: int = 0
    t0: float = 0.0
    c0: float = 0.0

    def start_clocks(self) -> None:
        self.t0 = time.perf_counter() - self.hist.get("seconds", 0.0)
        self.c0 = time.process_time() - self.hist.get("cpu_seconds", 0.0)

    def record_times(self) -> None:
        self.hist["seconds"] = time.perf_counter() - self.t0
        self.hist["cpu_seconds"] = time.process_time() - self.c0


@dataclass
class _Prepared:
    """One training subject as the patch sampler reads it: network input, skip MWF (%), target MWF (%),
    loss weights, pathology region labels, the voxels lesion patches centre on (``None``: no pathology)
    and the brain mask the other patches centre on."""

    x: np.ndarray
    mwf_percent: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    regions: np.ndarray
    focus: np.ndarray | None
    brain: np.ndarray


def train_fusion(
    train: Sequence[FusionSubject], val: Sequence[FusionSubject], *, channels: Sequence[str] = CHANNELS,
    width: int = 8, dropout: float = 0.1, epochs: int = 40, steps_per_epoch: int = 40, batch_size: int = 4,
    patch: int = 32, lr: float = 2e-3, channel_dropout: float = 0.5, lesion_weight: float = 1.0,
    lesion_patch_fraction: float = 0.0, region_weight: float = 0.0, skip_sigma: float = 0.0, patience: int = 8,
    lr_patience: int = 3, seed: int = 0, voxel_size_mm: float | Sequence[float] = 2.0,
    checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, max_seconds: float | None = None,
    training_data: dict | None = None, init: FusionModel | None = None, progress=None, cancel=None,
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
    no longer reproducible across machines of other speeds). ``init`` (a trained model of the same width
    whose channels are a subset of ``channels``, e.g. weights of card format 2) warm-starts the network: its
    tensors and normalisation are copied, the first convolution by input channel name, with zero kernels for
    the new channels and presence flags, so that before the first step the network is ``init`` itself; it is
    scored on the validation subjects first, and kept (``best_epoch`` -1) unless an epoch does better.

    Returns
    -------
    model : FusionModel
        Best weights, with the card filled (normalisation, training, metrics, uncertainty calibration).
    history : dict
        ``train_loss`` and ``val_rmse`` per epoch, ``best_epoch``, ``seconds`` (wall clock) and
        ``cpu_seconds`` (CPU time of this process: the wall time on an otherwise idle machine).
    """
    torch = _torch()
    names_t = _check_split(train, val)
    cfg = _Settings(seed=seed, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, patch=patch,
                    lr=lr, channel_dropout=channel_dropout, patience=patience, lr_patience=lr_patience,
                    lesion_weight=lesion_weight, lesion_patch_fraction=lesion_patch_fraction,
                    region_weight=region_weight, max_seconds=max_seconds)
    channels = tuple(c for c in channels if all(c in s.inputs for s in train))
    norm = normalisation_stats(train, channels)
    if init is not None:
        norm.update({c: init.card["normalisation"][c] for c in init.channels if c in norm})
    model = new_model(channels, width=width, dropout=dropout, skip_sigma=skip_sigma,
                      normalisation=norm, voxel_size_mm=voxel_size_mm, seed=seed)
    if init is not None:
        _warm_start(model, init)
    opt = torch.optim.Adam(model.net.parameters(), lr=lr)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    resuming = resume and ckpt is not None and (ckpt / "checkpoint.json").exists()
    run = _resumed_run(ckpt, model, opt) if resuming else _Run()
    if init is not None and not resuming:  # the warm start itself is the first candidate ("epoch -1")
        run.best_val = evaluate_rmse(model, val)
        run.best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    prepared = [_prepare_subject(model, s, lesion_weight) for s in train]
    run.start_clocks()
    _run_epochs(model, opt, prepared, val, cfg, run, ckpt, progress, cancel)
    if run.best_state is not None:
        model.net.load_state_dict(run.best_state)
    model.net.eval()
    step(progress, cancel, 0.97, "calibrating the uncertainty on the validation subjects")
    model.card["uncertainty"]["calibration_scale"] = calibrate_uncertainty(model, val)
    run.record_times()
    model.card["training"] = _training_card(cfg, run, names_t, val, training_data)
    if init is not None:
        model.card["training"]["initialised_from"] = {
            "channels": list(init.channels), "format": init.card.get("format"),
            "trained": init.card.get("training", {}).get("script", ""),
            "how": "tensors copied; first convolution by input channel, zero kernels for the new channels and flags"}
    model.card["metrics"] = {"validation_wm_rmse_percent": run.best_val}
    step(progress, cancel, 1.0, f"trained: validation RMSE {run.best_val:.2f} %")
    return model, run.hist


def _input_names(model: FusionModel) -> list[str]:
    """Names of the network's input channels: the maps, the brain mask, the presence flags."""
    return [*model.channels, "brain mask", *(f"{c} presence flag" for c in model.optional)]


def _warm_start(model: FusionModel, init: FusionModel) -> None:
    """Copy ``init``'s tensors into ``model``; the first convolution by input channel name (others 0)."""
    new, old = _input_names(model), _input_names(init)
    missing = [c for c in old if c not in new]
    if missing or init.card["architecture"].get("width") != model.card["architecture"].get("width"):
        raise InputError(f"init: its inputs {old} or width do not fit the new network ({new}); train without init.")
    target = model.net.state_dict()
    for key, tensor in init.net.state_dict().items():
        if tuple(tensor.shape) == tuple(target[key].shape):
            target[key] = tensor.detach().clone()
        elif tensor.ndim == 5 and tensor.shape[1] == len(old):  # the first convolution: (out, in, k, k, k)
            w = target[key].detach().clone().zero_()
            for j, name in enumerate(old):
                w[:, new.index(name)] = tensor[:, j]
            target[key] = w
        else:
            raise InputError(f"init: tensor {key} has shape {tuple(tensor.shape)}, the new network "
                             f"{tuple(target[key].shape)}; train without init.")
    model.net.load_state_dict(target)


def _check_split(train: Sequence[FusionSubject], val: Sequence[FusionSubject]) -> set[str]:
    """The training subjects' names; refuses an empty side and subjects on both sides."""
    if not train or not val:
        raise InputError("training set: needs at least one training and one validation subject.")
    names_t = {s.name for s in train}
    overlap = names_t & {s.name for s in val}
    if overlap:
        raise InputError(f"validation subjects {sorted(overlap)} are also training subjects; split by subject.")
    return names_t


def _resumed_run(ckpt: Path, model: FusionModel, opt) -> _Run:
    """The run saved in the checkpoint folder ``ckpt``; loads its weights and optimizer state into ``model``, ``opt``."""
    st, best_state = _load_checkpoint(ckpt, model, opt)
    return _Run(hist=st["history"], best_state=best_state, best_val=st["best_val"], start_epoch=st["epoch"] + 1,
                bad_epochs=st["bad_epochs"])


def _prepare_subject(model: FusionModel, s: FusionSubject, lesion_weight: float) -> _Prepared:
    """Network input, skip MWF and target in percent, and loss weights (brain 1, white matter 2, lesion and
    NAWM demyelination times ``lesion_weight``) of one training subject."""
    x, mwf_frac, mask = _subject_tensors(model, s)
    mwf_frac = skip_mwf(mwf_frac, mask, model.skip_sigma)
    weight = np.where(s.wm, 2.0, 1.0) * mask
    regions = _pathology_regions(s)
    weight[regions > 0] *= lesion_weight
    focus = regions > 0 if regions.any() else None
    return _Prepared(x=x, mwf_percent=mwf_frac * 100.0, target=100.0 * s.target.astype(np.float32),
                     weight=weight.astype(np.float32), regions=regions, focus=focus, brain=s.mask)


def _run_epochs(model: FusionModel, opt, prepared: Sequence[_Prepared], val: Sequence[FusionSubject],
                cfg: _Settings, run: _Run, ckpt: Path | None, progress, cancel) -> None:
    """Epochs from ``run.start_epoch`` to the epoch limit, early stopping or the time budget; each epoch ends
    with the validation score and, when ``ckpt`` is given, a checkpoint."""
    for epoch in range(run.start_epoch, cfg.epochs):
        stopped = _stop_reason(run, cfg)
        if stopped:
            run.hist["stopped"] = stopped
            break
        losses = _train_epoch(model, opt, prepared, epoch, cfg, run.best_val, progress, cancel)
        _end_epoch(model, opt, val, run, epoch, losses, cfg.lr_patience)
        run.record_times()
        if ckpt is not None:
            save_checkpoint(ckpt, model, opt,
                            {"epoch": epoch, "best_val": run.best_val, "bad_epochs": run.bad_epochs,
                             "history": run.hist}, run.best_state)


def _stop_reason(run: _Run, cfg: _Settings) -> str | None:
    """``"early stopping"`` after ``patience`` epochs without improvement, ``"time budget"`` past
    ``max_seconds``, else ``None``."""
    if run.bad_epochs >= cfg.patience:
        return "early stopping"
    if cfg.max_seconds is not None and time.perf_counter() - run.t0 > cfg.max_seconds:
        return "time budget"
    return None


def _train_epoch(model: FusionModel, opt, prepared: Sequence[_Prepared], epoch: int, cfg: _Settings,
                 best_val: float, progress, cancel) -> list[float]:
    """``steps_per_epoch`` Adam steps on random patch batches (random streams from ``(seed, epoch)``);
    the loss of each step."""
    torch = _torch()
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed * 100003 + epoch)
    net = model.net
    net.train()
    total = cfg.epochs * cfg.steps_per_epoch
    losses = []
    for it in range(cfg.steps_per_epoch):
        step(progress, cancel, (epoch * cfg.steps_per_epoch + it) / total,
             f"epoch {epoch + 1}/{cfg.epochs}, best val RMSE {best_val:.2f} %")
        xb, mb, tb, wb, rb = _sample_batch(model, prepared, rng, cfg)
        out = net(xb, mb)
        loss = (wb * (out - tb) ** 2).sum() / wb.sum().clamp(min=1.0)
        if cfg.region_weight > 0:
            loss = loss + cfg.region_weight * _region_mean_sq_error(out - tb, rb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _sample_batch(model: FusionModel, prepared: Sequence[_Prepared], rng: np.random.Generator, cfg: _Settings):
    """``batch_size`` random patches of random subjects as tensors ``(x, skip MWF %, target %, weight, regions)``.

    A patch of a subject with pathology is centred on it with probability ``lesion_patch_fraction`` (else on
    the brain), flipped left-right with probability 1/2, and each optional channel is dropped (values and
    presence flag 0) with probability ``channel_dropout``.
    """
    opt_idx = [i for i, c in enumerate(model.channels) if c in model.optional]
    flag0 = len(model.channels) + 1
    xb, mb, tb, wb, rb = [], [], [], [], []
    for _ in range(cfg.batch_size):
        p = prepared[rng.integers(len(prepared))]
        on_lesion = p.focus is not None and rng.random() < cfg.lesion_patch_fraction
        sl = _random_patch(p.focus if on_lesion else p.brain, cfg.patch, rng)
        xp, mp, tp, wp, rp = p.x[(slice(None),) + sl], p.mwf_percent[sl], p.target[sl], p.weight[sl], p.regions[sl]
        if rng.random() < 0.5:
            xp, mp, tp, wp, rp = xp[:, ::-1], mp[::-1], tp[::-1], wp[::-1], rp[::-1]
        xp = xp.copy()
        for j, ci in enumerate(opt_idx):
            if rng.random() < cfg.channel_dropout:
                xp[ci] = 0.0
                xp[flag0 + j] = 0.0
        xb.append(xp)
        mb.append(mp.copy()[None])
        tb.append(tp.copy()[None])
        wb.append(wp.copy()[None])
        rb.append(rp.copy()[None])
    torch = _torch()
    return tuple(torch.from_numpy(np.stack(a)) for a in (xb, mb, tb, wb, rb))


def _end_epoch(model: FusionModel, opt, val: Sequence[FusionSubject], run: _Run, epoch: int, losses: list[float],
               lr_patience: int) -> None:
    """Score the epoch on the validation subjects: keep the best weights, or count an epoch without
    improvement and halve the learning rate after every ``lr_patience`` of them (plateau)."""
    model.net.eval()
    val_rmse = evaluate_rmse(model, val)
    run.hist["train_loss"].append(float(np.mean(losses)))
    run.hist["val_rmse"].append(val_rmse)
    if val_rmse < run.best_val - 1e-4:
        run.best_val, run.bad_epochs, run.hist["best_epoch"] = val_rmse, 0, epoch
        run.best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    else:
        run.bad_epochs += 1
        if run.bad_epochs % lr_patience == 0:  # plateau: halve the learning rate
            for g in opt.param_groups:
                g["lr"] *= 0.5


def _training_card(cfg: _Settings, run: _Run, names_t: set[str], val: Sequence[FusionSubject],
                   training_data: dict | None) -> dict:
    """The ``training`` section of the model card: settings, loss, stopping, subjects, times and history."""
    hist = run.hist
    return {
        "seed": cfg.seed, "epochs_run": len(hist["val_rmse"]), "best_epoch": hist["best_epoch"],
        "steps_per_epoch": cfg.steps_per_epoch, "batch_size": cfg.batch_size, "patch": cfg.patch, "lr": cfg.lr,
        "channel_dropout": cfg.channel_dropout, "patience": cfg.patience, "lr_patience": cfg.lr_patience,
        "loss": f"weighted MSE (%) in brain: WM weight 2, lesion and NAWM demyelination 2 x {cfg.lesion_weight:g}; "
                f"+ {cfg.region_weight:g} x squared error of lesion / NAWM-demyelination region means per patch",
        "lesion_weight": cfg.lesion_weight, "lesion_patch_fraction": cfg.lesion_patch_fraction,
        "region_weight": cfg.region_weight,
        "stopped": hist.get("stopped", "epoch limit"), "max_seconds": cfg.max_seconds,
        "train_subjects": sorted(names_t), "validation_subjects": sorted(s.name for s in val),
        "seconds": round(hist["seconds"], 1), "cpu_seconds": round(hist["cpu_seconds"], 1),
        "torch_threads": _torch().get_num_threads(), "machine": "2-core CPU dev container, no GPU",
        "data": training_data or {},
        "history": {"train_loss": hist["train_loss"], "val_rmse": hist["val_rmse"]},
    }


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

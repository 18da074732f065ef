"""Fusion: the optional MTsat and chi_dia inputs (issues 20, 21): presence flags, card format 3, every presence
pattern in training, the warm start from card-format-2 weights, and the refusals of inconsistent inputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_myelin.cli import main
from napari_myelin.fusion.card import CARD_FORMAT, CHANNELS, OPTIONAL_CHANNELS, new_model
from napari_myelin.fusion.inference import fuse, predict
from napari_myelin.fusion.inputs import prepare_inputs
from napari_myelin.fusion.subjects import normalisation_stats
from napari_myelin.fusion.training import _prepare_subject, _sample_batch, _Settings, _warm_start, train_fusion
from napari_myelin.fusion.weights import load_model, save_model
from napari_myelin.utils.errors import InputError

from .test_fusion import KW, _one_thread, _subject  # noqa: F401  (_one_thread: the module's autouse fixture)


@pytest.fixture(scope="module")
def full(_one_thread):
    """A tiny model trained on every channel (MTsat and chi_dia follow the reference MWF)."""
    train, val = [_subject(i, optional=True) for i in range(3)], [_subject(50, optional=True)]
    model, _ = train_fusion(train, val, seed=3, **KW)
    return train, val, model


def _one_sentence(exc) -> bool:
    """One sentence: ends with a full stop, and no full stop inside is followed by a capital letter."""
    text = str(exc.value)
    return text.endswith(".") and re.search(r"\.\s+[A-Z]", text) is None


def _rmse(pred, s):
    return float(np.sqrt(np.mean((pred[s.wm] - 100 * s.target[s.wm]) ** 2)))


def test_card_lists_mtsat_and_chi_dia_with_presence_flags(full):
    _, val, model = full
    assert model.channels == CHANNELS and model.optional == OPTIONAL_CHANNELS == ("qsm", "mtsat", "chi_dia")
    card = model.card
    assert card["format"] == CARD_FORMAT == 3
    assert card["inputs"]["units"]["mtsat"] == "p.u." and card["inputs"]["units"]["chi_dia"].startswith("ppm")
    assert card["inputs"]["plausible_ranges"]["mtsat"][1] > 4 and card["inputs"]["plausible_ranges"]["chi_dia"][0] <= 0
    assert model.in_channels == 7 + 1 + 3
    s = val[0]
    everything = {c: s.inputs[c] for c in CHANNELS}
    x_all, *_ = prepare_inputs(everything, model, mask=s.mask)
    flag = {c: len(CHANNELS) + 1 + j for j, c in enumerate(model.optional)}
    for c in ("mtsat", "chi_dia"):
        x_without, *_ = prepare_inputs({**everything, c: None}, model, mask=s.mask)
        i = CHANNELS.index(c)
        # the map is normalised with the card's statistics inside the mask, its flag is the mask ...
        st = card["normalisation"][c]
        np.testing.assert_allclose(x_all[i][s.mask], (s.inputs[c][s.mask] - st["mean"]) / st["std"], rtol=1e-5)
        np.testing.assert_array_equal(x_all[flag[c]], s.mask.astype(np.float32))
        # ... and a missing map is zero with a zero flag, every other channel unchanged
        assert np.all(x_without[i] == 0) and np.all(x_without[flag[c]] == 0)
        others = [k for k in range(x_all.shape[0]) if k not in (i, flag[c])]
        np.testing.assert_array_equal(x_without[others], x_all[others])


def test_every_presence_pattern_is_trained():
    s = _subject(1, optional=True)
    model = new_model(CHANNELS, normalisation=normalisation_stats([s], CHANNELS))
    cfg = _Settings(seed=0, epochs=1, steps_per_epoch=1, batch_size=64, patch=8, lr=1e-3, channel_dropout=0.5,
                    patience=1, lr_patience=1, lesion_weight=1.0, lesion_patch_fraction=0.0, region_weight=0.0,
                    max_seconds=None)
    xb, *_ = _sample_batch(model, [_prepare_subject(model, s, 1.0)], np.random.default_rng(0), cfg)
    flags = xb[:, len(CHANNELS) + 1:].amax(dim=(2, 3, 4)).numpy() > 0
    values = xb[:, [CHANNELS.index(c) for c in model.optional]].abs().amax(dim=(2, 3, 4)).numpy() > 0
    np.testing.assert_array_equal(flags, values)  # a dropped map is dropped with its flag
    assert len({tuple(f) for f in flags}) == 8  # all 2^3 patterns of (QSM, MTsat, chi_dia) within 64 patches


def test_fusion_with_and_without_the_new_inputs_beats_mwf_alone(full):
    _, val, model = full
    s = val[0]
    base = [s.inputs[c] for c in ("mwf", "fa", "mk", "qpm")]
    rmse_in = _rmse(100 * s.inputs["mwf"], s)
    results = {}
    for label, given in {"all": ("qsm", "mtsat", "chi_dia"), "no MT/chi_dia": ("qsm",), "none": (),
                         "MTsat": ("mtsat",), "chi_dia": ("chi_dia",)}.items():
        out = fuse(*base, **{c: s.inputs[c] for c in given}, weights=model, mask=s.mask, n_samples=1)
        results[label] = _rmse(out["imwf"], s)
        assert results[label] < 0.8 * rmse_in, label
        names = out.descriptions["imwf"]
        assert ("MTsat" in names) == ("mtsat" in given) and ("chi_dia" in names) == ("chi_dia" in given)


def test_new_card_refuses_inconsistent_inputs_in_one_sentence(full, tmp_path):
    _, val, model = full
    s = val[0]
    base = {c: s.inputs[c] for c in ("mwf", "fa", "mk", "qpm", "qsm")}
    # MTsat as a fraction instead of p.u.
    with pytest.raises(InputError, match="mtsat: values") as exc:
        fuse(**base, mtsat=s.inputs["mtsat"] / 100, weights=model, mask=s.mask)
    assert _one_sentence(exc)
    # chi_dia with the sign of the diamagnetic susceptibility instead of its magnitude
    with pytest.raises(InputError, match="chi_dia: values are mostly negative") as exc:
        fuse(**base, chi_dia=-s.inputs["chi_dia"], weights=model, mask=s.mask)
    assert _one_sentence(exc)
    # chi_dia in ppb
    with pytest.raises(InputError, match="chi_dia: values") as exc:
        fuse(**base, chi_dia=1000 * s.inputs["chi_dia"], weights=model, mask=s.mask)
    assert _one_sentence(exc)
    # MTsat on another grid
    with pytest.raises(InputError, match="mtsat: its grid") as exc:
        fuse(**base, mtsat=s.inputs["mtsat"][:-1], weights=model, mask=s.mask)
    assert _one_sentence(exc)
    # a card whose format this version does not know
    path = save_model(model, tmp_path / "w.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps(dict(card, format=4)))
    with pytest.raises(InputError, match="format 4, this napari-myelin reads formats 2 and 3") as exc:
        load_model(path)
    assert _one_sentence(exc)
    # the command line: nothing written, exit status 2
    save_model(model, path)
    files = {}
    for c in ("mwf", "fa", "mk", "qpm", "mtsat"):
        import nibabel as nib

        files[c] = tmp_path / f"{c}.nii.gz"
        data = s.inputs[c] / 100 if c == "mtsat" else s.inputs[c]
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), str(files[c]))
    args = ["fuse"] + [a for c, f in files.items() for a in (f"--{c}", str(f))]
    assert main(args + ["--out", str(tmp_path / "o"), "--weights", str(path)]) == 2
    assert not (tmp_path / "o" / "imwf.nii.gz").exists()


def test_format_2_cards_are_read_as_before_and_refuse_the_new_maps(tmp_path):
    five = ("mwf", "fa", "mk", "qpm", "qsm")
    train, val = [_subject(i) for i in range(2)], [_subject(9)]
    old, _ = train_fusion(train, val, channels=five, seed=1, **dict(KW, epochs=1, steps_per_epoch=2))
    path = save_model(old, tmp_path / "old.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    card["format"] = 2
    del card["inputs"]["plausible_ranges"]  # as written by release 0.2
    path.with_suffix(".json").write_text(json.dumps(card))
    loaded = load_model(path)
    assert loaded.channels == five and loaded.optional == ("qsm",) and loaded.in_channels == 7
    s = _subject(9, optional=True)
    a = fuse(*(s.inputs[c] for c in five), weights=old, mask=s.mask, n_samples=1)
    b = fuse(*(s.inputs[c] for c in five), weights=path, mask=s.mask, n_samples=1)
    np.testing.assert_array_equal(a["imwf"], b["imwf"])
    with pytest.raises(InputError, match="mtsat: given, but the model card of these weights has no mtsat channel"):
        fuse(*(s.inputs[c] for c in five), mtsat=s.inputs["mtsat"], weights=path, mask=s.mask)


def test_warm_start_from_format_2_weights_starts_from_the_same_network(full):
    _, val, _ = full
    five = ("mwf", "fa", "mk", "qpm", "qsm")
    old, _ = train_fusion([_subject(1)], [_subject(2)], channels=five, seed=0, **dict(KW, epochs=1, steps_per_epoch=2))
    s = val[0]
    norm = {**normalisation_stats([s], CHANNELS), **old.card["normalisation"]}
    new = new_model(CHANNELS, normalisation=norm)
    _warm_start(new, old)
    x_old, m_old, *_ = prepare_inputs({c: s.inputs[c] for c in five}, old, mask=s.mask)
    x_new, m_new, *_ = prepare_inputs(s.inputs, new, mask=s.mask)
    a, _ = predict(old, x_old, m_old, n_samples=1)
    b, _ = predict(new, x_new, m_new, n_samples=1)
    np.testing.assert_allclose(a, b, atol=1e-5)  # zero kernels for MTsat, chi_dia and their flags

"""Registration (ANTs) and the standard-brain database, checked against known transforms and closed forms.

Registrations run at 4 mm (template downsampled) so each takes about a second; the 2 mm phantom
numbers of the README come from ``benchmarks/bench_registration.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import ants
import nibabel as nib
import numpy as np
import pytest

from napari_myelin.cli import main
from napari_myelin.align import atlas
from napari_myelin.align import ants_io, quality, runner, transforms
from napari_myelin.align import registration as R
from napari_myelin.align.database import build_database, load_database, smooth
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import Volume, load_volume

from .conftest import oblique_affine

RES = 4.0


def _downsample(vol: Volume, res: float, interp: int = 0) -> Volume:
    return ants_io.from_ants(ants.resample_image(ants_io.to_ants(vol), (res, res, res), False, interp))


@pytest.fixture(scope="module")
def template4():
    return _downsample(atlas.load_template(2), RES)


@pytest.fixture(scope="module")
def subject():
    return make_subject()


def make_subject():
    """The template seen through a known affine on an oblique, anisotropic 4 mm grid, with its true labels."""
    a = np.radians(8.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, 1.0, 1.0]) @ rot @ np.diag([RES * 1.1, RES * 0.9, RES * 1.2])
    aff[:3, 3] = [90.0, -120.0, -60.0]
    grid = ants_io.to_ants(np.zeros((42, 60, 36), np.float32), aff)
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    tx.set_parameters([1.05, 0.03, 0.0, -0.02, 0.95, 0.02, 0.0, 0.0, 1.02, 3.0, -4.0, 5.0])
    t1 = atlas.load_template(2)
    labels, lut = atlas.load_tract_atlas(2)
    wm = atlas.load_tissue_probability("wm", 2)
    image = ants_io.from_ants(ants.apply_ants_transform_to_image(tx, ants_io.to_ants(t1), grid))
    true_labels = ants_io.from_ants(ants.apply_ants_transform_to_image(
        tx, ants_io.to_ants(labels.data, labels.affine), grid, interpolation="nearestneighbor"))
    true_wm = ants_io.from_ants(ants.apply_ants_transform_to_image(tx, ants_io.to_ants(wm), grid))
    return {"image": image, "labels": np.rint(true_labels.data).astype(np.int32), "wm": true_wm, "lut": lut}


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
def test_ants_round_trip_oblique_anisotropic():
    aff = oblique_affine(zooms=(1.2, 0.9, 2.5), angle_deg=12.0, lps=True)
    data = np.random.default_rng(0).random((7, 8, 9)).astype(np.float32)
    img = ants_io.to_ants(data, aff)
    np.testing.assert_array_equal(img.numpy(), data)
    back = ants_io.from_ants(img)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(back.data, data)
    # a voxel's ANTs physical point (LPS) is the NIfTI world point (RAS) with x, y negated
    ijk = (2, 5, 3)
    ras = (aff @ np.r_[ijk, 1])[:3]
    lps = np.asarray(ants.transform_index_to_physical_point(img, ijk))
    np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-4)
    # an image written by ANTs reads back in nibabel with the same affine
    assert np.allclose(ants_io.affine_from_ants(img), aff, atol=1e-5)


def test_ants_geometry_through_nifti(tmp_path):
    aff = oblique_affine(zooms=(2.0, 1.5, 3.0), angle_deg=20.0, lps=False)
    img = ants_io.to_ants(np.ones((4, 5, 6), np.float32), aff)
    ants.image_write(img, str(tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(nib.load(str(tmp_path / "x.nii.gz")).affine, aff, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# registration on a known affine problem
# ------------------------------------------------------------------------------------------------
def _scores(reg, subject, template4):
    warped_wm = reg.apply(subject["wm"], "linear").data > 0.5
    template_wm = _downsample(atlas.load_tissue_probability("wm", 2), RES, 0).data > 0.5
    labels, _ = atlas.load_tract_atlas(2)
    native = reg.to_native(labels)
    return quality.dice(warped_wm, template_wm), quality.mean_label_dice(native.data, subject["labels"])


@pytest.mark.parametrize("preset", ["fast", "affine"])
def test_register_recovers_known_affine(subject, template4, preset):
    reg = R.register_to_template(subject["image"], preset=preset, template=template4, seed=0)
    assert reg.warped.shape == template4.shape
    np.testing.assert_allclose(reg.warped.affine, template4.affine)
    wm_dice, label_dice = _scores(reg, subject, template4)
    # the true transform is affine: every preset must find it (4 mm labels limit the Dice)
    assert wm_dice >= 0.85
    assert label_dice >= 0.7
    assert reg.similarity > runner.WARN_SIMILARITY and reg.overlap > 0.9
    # labels brought to native space are integer labels of the atlas on the subject's grid
    native = reg.to_native(atlas.load_tract_atlas(2)[0])
    assert native.shape == subject["image"].shape and native.data.dtype.kind == "i"
    np.testing.assert_allclose(native.affine, subject["image"].affine)
    assert set(np.unique(native.data)) <= set(subject["lut"]["index"]) | {0}


REPRO_SCRIPT = """
import ants, numpy as np
from napari_myelin.align import atlas
from napari_myelin.align import ants_io
from napari_myelin.align import registration as R
t4 = ants_io.from_ants(ants.resample_image(ants_io.to_ants(atlas.load_template(2)), (6.0,) * 3, False, 0))
rng = np.random.default_rng(0)
img = t4.with_data(np.roll(t4.data, (1, -1, 2), axis=(0, 1, 2)) * (1 + 0.05 * rng.random(t4.shape)))
img.affine = t4.affine.copy(); img.affine[:3, 3] += [2.0, -3.0, 1.5]
same = []
for seed in (0, 7):  # 0, the default, included (ANTs itself reads 0 as "seed from the clock")
    a = R.register_to_template(img, preset="fast", template=t4, seed=seed, check=False)
    b = R.register_to_template(img, preset="fast", template=t4, seed=seed, check=False)
    same.append(np.array_equal(a.warped.data, b.warped.data))
# fast is ANTsPy's plain SyN: with the same seed, the transforms of the bare call itself
ants.config._random_seed = ants_io.ants_seed(0)
out = ants.registration(ants_io.to_ants(t4), ants_io.to_ants(img), type_of_transform="SyN")
ants.config._random_seed = None
peer = ants.apply_transforms(fixed=ants_io.to_ants(np.zeros(t4.shape, np.float32), t4.affine),
                             moving=ants_io.to_ants(img), transformlist=out["fwdtransforms"], defaultvalue=0)
a = R.register_to_template(img, preset="fast", template=t4, check=False)
same.append(np.array_equal(a.warped.data, peer.numpy()))
print("IDENTICAL" if all(same) else f"DIFFERENT {same}")
"""


def test_reproducible_for_a_seed_single_thread():
    """With one ITK thread (set before ANTs first runs, hence a fresh process) a seed repeats bit for bit, and
    the fast preset gives what a bare ``ants.registration(type_of_transform="SyN")`` gives with that seed."""
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    out = subprocess.run([sys.executable, "-c", REPRO_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("IDENTICAL")


def test_ants_seed_never_zero():
    """ANTs takes --random-seed 0 as "from the clock": every seed of ours maps to a distinct non-zero one."""
    seeds = [ants_io.ants_seed(s) for s in (0, 1, 2, 7, 2**31 - 2)]
    assert 0 not in seeds and len(set(seeds)) == len(seeds)
    with pytest.raises(InputError, match="seed"):
        ants_io.ants_seed(-1)


def test_repeatable_with_threads(subject, template4):
    """With several threads ANTs' mutual information varies slightly; the tract labels barely move."""
    labels, _ = atlas.load_tract_atlas(2)
    a = R.register_to_template(subject["image"], preset="fast", template=template4, seed=3)
    b = R.register_to_template(subject["image"], preset="fast", template=template4, seed=3)
    assert quality.mean_label_dice(a.to_native(labels).data, b.to_native(labels).data) >= 0.85
    assert quality.dice(a.warped.data > 50, b.warped.data > 50) >= 0.97


def test_transforms_saved_and_reused(subject, template4, tmp_path, monkeypatch):
    first = R.register_to_template(subject["image"], preset="fast", template=template4, out_dir=tmp_path)
    assert not first.reused
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["to_template.json", "to_template_0GenericAffine.mat", "to_template_1InverseWarp.nii.gz",
                     "to_template_1Warp.nii.gz"]
    assert all(str(p).startswith(str(tmp_path)) for p in first.forward + first.inverse)
    record = json.loads((tmp_path / "to_template.json").read_text())
    assert record["Preset"] == "fast" and record["Similarity"] == pytest.approx(first.similarity)

    def _no_second_registration(*args, **kwargs):
        raise AssertionError("registered twice")

    monkeypatch.setattr(ants, "registration", _no_second_registration)
    monkeypatch.setattr(runner, "register_stages", _no_second_registration)
    again = R.register_to_template(subject["image"], preset="fast", template=template4, out_dir=tmp_path)
    assert again.reused
    np.testing.assert_allclose(again.warped.data, first.warped.data, atol=1e-5)
    assert again.similarity == pytest.approx(first.similarity, abs=1e-6)
    # another preset is a different registration
    with pytest.raises(AssertionError, match="registered twice"):
        R.register_to_template(subject["image"], preset="affine", template=template4, out_dir=tmp_path)


def test_apply_interpolations(subject, template4):
    reg = R.register_to_template(subject["image"], preset="affine", template=template4)
    img = subject["image"]
    mask = img.with_data(img.data > np.percentile(img.data, 70))
    warped_mask = reg.apply(mask, "mask")
    assert warped_mask.data.dtype == np.uint8 and set(np.unique(warped_mask.data)) <= {0, 1}
    lab = img.with_data(subject["labels"])
    warped_lab = reg.apply(lab, "genericLabel")
    assert set(np.unique(warped_lab.data)) <= set(np.unique(subject["labels"]))
    series = img.with_data(np.stack([img.data, 2 * img.data], axis=-1))
    warped_series = reg.apply(series)
    assert warped_series.shape == template4.shape + (2,)
    np.testing.assert_allclose(warped_series.data[..., 1], 2 * warped_series.data[..., 0], rtol=1e-4, atol=1e-3)
    with pytest.raises(InputError, match="interpolation"):
        reg.apply(img, "cubic")


def test_coregister_rigid_different_contrast(subject):
    """A second modality (inverted contrast, rigidly moved) aligns on the reference by mutual information."""
    ref = subject["image"]
    moved_grid = ref.affine.copy()
    a = np.radians(6.0)
    rot = np.eye(4)
    rot[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    rot[:3, 3] = [4.0, -6.0, 3.0]
    # same array, world positions moved: the "other modality" is the reference displaced by `rot`
    brain = ref.data > 0.2 * np.percentile(ref.data, 99)
    other = Volume(np.where(brain, ref.data.max() - ref.data, 0).astype(np.float32), rot @ moved_grid)
    reg = R.coregister(ref, other)
    lab = Volume(subject["labels"], other.affine)  # the labels move with the other modality
    back = reg.apply(lab, "genericLabel")
    assert quality.mean_label_dice(back.data, subject["labels"]) >= 0.75
    assert quality.mean_label_dice(subject["labels"], subject["labels"]) == 1.0


def test_bad_inputs_refused(subject, template4, tmp_path):
    img = subject["image"]
    with pytest.raises(InputError, match="empty"):
        R.register_to_template(img.with_data(np.zeros(img.shape, np.float32)), template=template4)
    with pytest.raises(InputError, match="preset"):
        R.register_to_template(img, preset="quick", template=template4)
    noise = img.with_data(np.random.default_rng(1).random(img.shape).astype(np.float32))
    with pytest.raises(InputError, match="registration failed"):
        R.register_to_template(noise, preset="affine", template=template4, out_dir=tmp_path / "noise")
    assert list((tmp_path / "noise").iterdir()) == []  # no transforms of a failed registration left behind
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R.register_to_template(img, preset="affine", template=template4)  # a good one does not warn


def test_reference_image_picks_b0():
    data = np.zeros((8, 8, 8, 3), np.float32)
    data[..., 1] = 7.0
    vol = Volume(data, np.eye(4), bvals=np.array([1000.0, 0.0, 1000.0]), bvecs=np.eye(3))
    assert np.all(quality.reference_image(vol).data == 7.0)
    assert quality.reference_image(Volume(data, np.eye(4))).data.max() == 0.0


def test_similarity_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.random(20000)
    assert quality.normalized_mutual_information(x, 3 * x + 1) == pytest.approx(1.0, abs=1e-9)
    assert quality.normalized_mutual_information(x, rng.random(20000)) < 0.02
    assert quality.dice(np.ones(4, bool), np.r_[True, True, False, False]) == pytest.approx(2 * 2 / 6)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def test_cli_register_apply_atlas(tmp_path, subject, capsys):
    img = subject["image"]
    moving = tmp_path / "in" / "t1w.nii.gz"
    moving.parent.mkdir()
    nib.save(nib.Nifti1Image(img.data, img.affine), str(moving))
    mwf = img.with_data(np.where(img.data > 0, 0.1, 0).astype(np.float32))
    nib.save(nib.Nifti1Image(mwf.data, img.affine), str(tmp_path / "in" / "mwf.nii.gz"))
    (tmp_path / "in" / "mwf.json").write_text(json.dumps({"Units": "fraction"}))
    out = tmp_path / "out"
    argv = ["register", str(moving), "--out", str(out), "--preset", "affine", "--apply",
            str(tmp_path / "in" / "mwf.nii.gz"), "--atlas-to-native"]
    assert main(argv) == 0
    for name in ("warped.nii.gz", "warped.json", "mwf.nii.gz", "mwf.json", "tracts.nii.gz", "tracts.tsv",
                 "to_template_0GenericAffine.mat", "to_template.json"):
        assert (out / name).exists(), name
    template = atlas.load_template(2)
    warped = load_volume(out / "warped.nii.gz")
    assert warped.shape == template.shape
    np.testing.assert_allclose(warped.affine, template.affine)
    warped_mwf = load_volume(out / "mwf.nii.gz")
    # linear interpolation of a 0/0.1 map: never above 0.1, exactly 0.1 inside the warped brain
    assert warped_mwf.data.min() >= 0 and warped_mwf.data.max() <= 0.1 + 1e-6
    assert np.median(warped_mwf.data[warped_mwf.data > 0]) == pytest.approx(0.1, abs=1e-6)
    assert json.loads((out / "mwf.json").read_text())["Units"] == "fraction"
    tracts = load_volume(out / "tracts.nii.gz")
    assert tracts.shape == img.shape
    np.testing.assert_allclose(tracts.affine, img.affine, atol=1e-5)
    assert quality.mean_label_dice(tracts.data, subject["labels"]) >= 0.7
    lut = (out / "tracts.tsv").read_text().splitlines()
    assert lut[0].startswith("index\tname")
    # second run: transforms reused, with a user atlas (left/right tract labels of the shipped atlas)
    labels, lut = atlas.load_tract_atlas(2)
    side = np.zeros(int(lut["index"].max()) + 1, np.int32)
    side[lut["index"].to_numpy()] = np.where(lut["hemisphere"] == "L", 1, np.where(lut["hemisphere"] == "R", 2, 0))
    nib.save(nib.Nifti1Image(side[labels.data], labels.affine), str(tmp_path / "in" / "sides.nii.gz"))
    (tmp_path / "in" / "sides_lut.tsv").write_text("index\tname\n1\tleft tracts\n2\tright tracts\n")
    capsys.readouterr()
    assert main(argv + ["--atlas", str(tmp_path / "in" / "sides.nii.gz"),
                        "--lut", str(tmp_path / "in" / "sides_lut.tsv")]) == 0
    assert "reused" in capsys.readouterr().out
    sides = load_volume(out / "tracts.nii.gz")
    assert quality.mean_label_dice(sides.data, side[subject["labels"]]) >= 0.8
    assert (out / "tracts.tsv").read_text().splitlines()[1].startswith("1\tleft tracts")
    # bad input: exit 2 with one sentence
    empty = tmp_path / "in" / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), str(empty))
    assert main(["register", str(empty), "--out", str(tmp_path / "o2")]) == 2
    assert "empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# standard-brain database
# ------------------------------------------------------------------------------------------------
def _subjects(n=5, shape=(12, 14, 10), seed=0):
    rng = np.random.default_rng(seed)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    base = np.zeros(shape)
    base[2:-2, 2:-2, 2:-2] = 1.0
    subjects = {}
    for i in range(n):
        mwf = base * (0.1 + 0.02 * rng.standard_normal(shape))
        fa = base * (0.5 + 0.1 * rng.standard_normal(shape))
        subjects[f"sub-{i:02d}"] = {
            "mwf_qpm": Volume(mwf.astype(np.float32), aff, metadata={"Units": "fraction"}),
            "fa": Volume(fa.astype(np.float32), aff, metadata={"Units": ""}),
        }
    return subjects, base.astype(bool), aff


def test_database_mean_sd_closed_form(tmp_path):
    subjects, inside, aff = _subjects()
    stack = np.stack([s["mwf_qpm"].data for s in subjects.values()]).astype(float)
    wm = Volume(np.where(inside, 0.9, 0.1).astype(np.float32), aff)
    db = build_database(subjects, wm_probability=wm)
    np.testing.assert_allclose(db.mean["mwf_qpm"][inside], stack.mean(0)[inside], rtol=1e-5)
    np.testing.assert_allclose(db.sd["mwf_qpm"][inside], stack.std(0, ddof=1)[inside], rtol=1e-4)
    assert np.all(db.count["fa"][inside] == 5) and np.all(db.count["fa"][~inside] == 0)
    np.testing.assert_allclose(db.wm_mwf_atlas[inside], stack.mean(0)[inside], rtol=1e-5)
    assert np.all(db.wm_mwf_atlas[~inside] == 0)
    z = db.zscore(subjects["sub-00"]["mwf_qpm"], "mwf_qpm")
    s = stack[:, inside]
    np.testing.assert_allclose(z[inside], (s[0] - s.mean(0)) / s.std(0, ddof=1), rtol=1e-3)
    db.save(tmp_path / "db")
    back = load_database(tmp_path / "db")
    assert back.subjects == list(subjects) and back.parameters == ["mwf_qpm", "fa"]
    np.testing.assert_allclose(back.sd["fa"], db.sd["fa"])
    np.testing.assert_allclose(back.wm_mwf_atlas, db.wm_mwf_atlas)
    assert back.contributions["sub-03"] == ["mwf_qpm", "fa"]


def test_smoothing_fwhm_and_masked_normalisation():
    zooms = (2.0, 1.0, 1.0)
    delta = np.zeros((41, 61, 61))
    delta[20, 30, 30] = 1.0
    out = smooth(delta, 6.0, zooms, np.ones(delta.shape, bool))
    profile = out[20, :, 30] / out[20, 30, 30]
    # FWHM measured along y (1 mm voxels) by linear interpolation of the half-maximum crossing
    right = profile[30:]
    k = np.flatnonzero(right < 0.5)[0]
    half = (k - 1) + (right[k - 1] - 0.5) / (right[k - 1] - right[k])
    assert 2 * half == pytest.approx(6.0, abs=0.1)
    profile_x = out[:, 30, 30] / out[20, 30, 30]
    assert profile_x[21] == pytest.approx(np.exp(-(2.0**2) / (2 * (6.0 / np.sqrt(8 * np.log(2))) ** 2)), rel=1e-2)
    # a constant inside a mask stays constant after masked smoothing (no background leak)
    mask = np.zeros((20, 20, 20), bool)
    mask[5:15, 5:15, 5:15] = True
    const = smooth(np.where(mask, 3.0, 0.0), 8.0, (1.0, 1.0, 1.0), mask)
    np.testing.assert_allclose(const[mask], 3.0)
    assert np.all(np.isnan(const[~mask]))


def test_cli_database(tmp_path, capsys):
    subjects, inside, aff = _subjects(n=3)
    folders = []
    for name, maps in subjects.items():
        folder = tmp_path / name
        folder.mkdir()
        for p, vol in maps.items():
            nib.save(nib.Nifti1Image(vol.data, aff), str(folder / f"{p}.nii.gz"))
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), aff), str(folder / "warped.nii.gz"))
        folders.append(str(folder))
    out = tmp_path / "db"
    assert main(["database", "--out", str(out), "--fwhm", "0", *folders]) == 0
    mean = load_volume(out / "mean_fa.nii.gz")
    stack = np.stack([s["fa"].data for s in subjects.values()]).astype(float)
    np.testing.assert_allclose(mean.data[inside], stack.mean(0)[inside], rtol=1e-5)
    assert (out / "wm_mwf_atlas.nii.gz").exists()  # the subjects have mwf_qpm maps
    tsv = (out / "subjects.tsv").read_text().splitlines()
    assert tsv[0] == "subject\tparameters" and len(tsv) == 4
    assert not (out / "mean_warped.nii.gz").exists()
    assert main(["database", "--out", str(out), str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# phantom subject (known deformation from template space)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom():
    from napari_myelin.sims.phantom import make_phantom

    return make_phantom(seed=1, size="small")


def test_coregister_phantom_modalities(phantom):
    """The phantom's acquisitions share the scanner space: rigid MI co-registration onto the first spin
    echo must do as well as the true (identity) alignment, on grids of other voxel size and orientation."""
    ref = quality.reference_image(phantom.acq["mese"])
    truth = phantom.truth["mese"]["labels"].data
    for modality, acq in (("gre", "gre_mag"), ("spgr", "spgr")):
        reg = R.coregister(ref, phantom.acq[acq])
        labels = phantom.truth[modality]["labels"]
        moved = reg.apply(labels, "genericLabel")
        ideal = transforms.Registration(ref, labels, ref, [], [], [], "identity", 0.0, 0.0).apply(labels, "genericLabel")
        assert moved.shape == ref.shape
        assert quality.mean_label_dice(moved.data, truth) >= quality.mean_label_dice(ideal.data, truth) - 0.02
        assert reg.similarity > runner.WARN_SIMILARITY


def test_phantom_subject_fast(template4, phantom):
    """Small (4 mm) phantom: WM and tracts line up far better than without registration.

    The README's 2 mm figures (WM Dice >= 0.85, tract Dice >= 0.7) come from
    ``benchmarks/bench_registration.py``; at 4 mm thin tracts bound the Dice lower.
    """
    ph = phantom
    spgr = ph.acq["spgr"]
    moving = spgr.with_data(spgr.data[..., -1])  # 20 deg: T1-weighted, as the template
    truth = ph.truth["spgr"]
    template_wm = _downsample(atlas.load_tissue_probability("wm", 2), RES, 0).data > 0.5
    labels, _ = atlas.load_tract_atlas(2)
    reg = R.register_to_template(moving, preset="fast", template=template4, seed=0)
    wm_dice = quality.dice(reg.apply(truth["wm"]).data > 0.5, template_wm)
    tract_dice = quality.mean_label_dice(reg.to_native(labels).data, truth["labels"].data)
    # no registration: the same physical point in scanner and template space
    identity = transforms.Registration(template4, moving, moving, [], [], [], "identity", 0.0, 0.0)
    wm_dice0 = quality.dice(identity.apply(truth["wm"]).data > 0.5, template_wm)
    tract_dice0 = quality.mean_label_dice(identity.to_native(labels).data, truth["labels"].data)
    assert wm_dice >= 0.75 and tract_dice >= 0.4
    assert wm_dice >= wm_dice0 + 0.1 and tract_dice >= tract_dice0 + 0.1

"""QSM phase sanity: ranges that are not a wrapped GRE phase are refused, and the phase sign is checked
from the data (high-R2* voxels must come out paramagnetic) with a warning naming ``--phase-sign``."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from napari_myelin.cli import main
from napari_myelin.io.volume import load_volume
from napari_myelin.reconst import qsm
from napari_myelin.reconst.qsm import PhaseSignWarning, phase_sign_result
from napari_myelin.utils.errors import InputError

from ._qsm_phantom import make_head


@pytest.fixture(scope="module")
def small_head():
    return make_head(shape=(40, 40, 32), voxel_mm=3.0)


def _fit(head, phase, **kw):
    """``fit_qsm`` of the head with ``phase``; returns the maps and the PhaseSignWarnings issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = qsm.fit_qsm(head.magnitude, phase, head.echo_times, field_strength=3.0, affine=head.affine,
                           inversion="tkd", bfr="lbv", **kw)
    return maps, [str(w.message) for w in caught if issubclass(w.category, PhaseSignWarning)]


@pytest.mark.parametrize(
    "phase, message",
    [
        # a float phase behind a broken header (ROMEO's +-pi/855): it would read as a field near 0
        (np.linspace(-0.004, 0.004, 64), r"^phase\.nii\.gz: values -0\.004\.\.0\.004 are neither radians"),
        # integers of a 12-bit range that use a sliver of it
        (np.arange(2000, 2064), r"^phase\.nii\.gz: values 2000\.\.2063 are neither radians"),
        # a constant phase (an empty or zero-filled image)
        (np.zeros(64), r"^phase\.nii\.gz: values 0\.\.0 are neither radians"),
        (np.where(np.arange(64) == 5, np.inf, np.linspace(-3, 3, 64)), r"^phase\.nii\.gz: has NaN or infinite"),
        (np.where(np.arange(64) == 5, np.nan, np.linspace(-3, 3, 64)), r"^phase\.nii\.gz: has NaN or infinite"),
    ],
)
def test_phase_that_is_not_a_wrapped_gre_phase_is_refused(phase, message):
    with pytest.raises(InputError, match=message) as info:
        qsm.phase_to_radians(phase.reshape(4, 4, 4), name="phase.nii.gz")
    assert not re.search(r"[.;] [A-Z]", str(info.value)) and str(info.value).endswith(".")  # one sentence


def test_phase_spanning_a_quarter_of_its_range_is_accepted():
    """The smallest accepted spans: pi/2 rad, 1024 of 0..4095, 2048 of -4096..4095."""
    rad = np.linspace(-np.pi / 4, np.pi / 4, 64).reshape(4, 4, 4)
    np.testing.assert_array_equal(qsm.phase_to_radians(rad), rad)
    ints = np.linspace(1000, 2024, 64).round().reshape(4, 4, 4)
    np.testing.assert_allclose(qsm.phase_to_radians(ints), 2 * np.pi * ints / 4096 - np.pi, atol=1e-12)
    signed = np.linspace(-1024, 1024, 64).round().reshape(4, 4, 4)
    np.testing.assert_allclose(qsm.phase_to_radians(signed), np.pi * signed / 4096, atol=1e-12)
    with pytest.raises(InputError, match=r"values -0\.7\.\.0\.7 are neither"):
        qsm.phase_to_radians(np.linspace(-0.7, 0.7, 64).reshape(4, 4, 4))  # 1.4 rad < pi/2


def test_phase_sign_checked_on_the_head(small_head):
    """The head's deep grey nuclei (R2* 40 /s, chi +0.10 ppm) are the high-R2* voxels: with the right
    sign all of them are above their neighbourhood and nothing is said; with the phase negated all are
    below and the warning names --phase-sign; --phase-sign -1 on the negated phase gives back the chi of
    the right phase exactly."""
    h = small_head
    right, said = _fit(h, h.phase)
    assert said == []
    check = right.parameters["PhaseSignCheck"]
    assert phase_sign_result(check) == "consistent" and check["ParamagneticVoxels"] == check["Voxels"] == 32
    nuclei = h.chi == 0.10
    assert 32 <= nuclei.sum()
    assert check["R2starThreshold_per_s"] == pytest.approx(1.5 * 24.8, rel=0.01)  # 1.5 x the white-matter 25 /s

    flipped, said = _fit(h, -h.phase)
    assert len(said) == 1 and "--phase-sign -1" in said[0] and "phase_sign=-1" in said[0]
    assert said[0].startswith("phase: 32 of the 32 high-R2* voxels (veins, iron-rich nuclei) came out diamagnetic")
    assert flipped.parameters["PhaseSignCheck"] == {"Voxels": 32, "ParamagneticVoxels": 0,
                                                    "R2starThreshold_per_s": check["R2starThreshold_per_s"]}
    assert phase_sign_result(flipped.parameters["PhaseSignCheck"]) == "inverted"
    assert np.median(flipped["chi"][nuclei & (flipped["mask"] > 0)]) < 0  # the nuclei came out diamagnetic

    recovered, said = _fit(h, -h.phase, phase_sign=-1)
    assert said == [] and recovered.parameters["PhaseSign"] == -1
    np.testing.assert_array_equal(recovered["chi"], right["chi"])
    assert np.median(recovered["chi"][nuclei & (recovered["mask"] > 0)]) > 0.05

    # the advice names the other sign when -1 was given to a phase that needed +1
    _, said = _fit(h, h.phase, phase_sign=-1)
    assert len(said) == 1 and "--phase-sign 1 " in said[0]


def test_phase_sign_not_checked_without_r2star(small_head):
    """One echo gives no R2*: the check says so and warns about nothing."""
    h = small_head
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhaseSignWarning)
        maps = qsm.fit_qsm(h.magnitude[..., :1], -h.phase[..., :1], h.echo_times[:1], field_strength=3.0,
                           affine=h.affine, inversion="tkd", bfr="lbv")
    check = maps.parameters["PhaseSignCheck"]
    assert check == {"Voxels": 0, "ParamagneticVoxels": 0, "R2starThreshold_per_s": None}
    assert phase_sign_result(check) == "not checked"


def test_cli_phase_sign_warns_and_flips(write_nifti, tmp_path, small_head):
    h = small_head
    side = {"EchoTime": h.echo_times.tolist(), "MagneticFieldStrength": 3.0}
    mag = str(write_nifti("mag.nii.gz", h.magnitude, h.affine, side))
    flipped = str(write_nifti("flipped.nii.gz", -h.phase, h.affine, side))
    right = str(write_nifti("phase.nii.gz", h.phase, h.affine, side))
    common = ["--inversion", "tkd", "--bfr", "lbv"]
    with pytest.warns(PhaseSignWarning, match=r"rerun with --phase-sign -1"):
        assert main(["qsm", mag, flipped, "--out", str(tmp_path / "flipped"), *common]) == 0
    side_out = json.loads((tmp_path / "flipped" / "chi.json").read_text())
    assert phase_sign_result(side_out["Parameters"]["PhaseSignCheck"]) == "inverted"
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhaseSignWarning)
        assert main(["qsm", mag, flipped, "--phase-sign", "-1", "--out", str(tmp_path / "fixed"), *common]) == 0
        assert main(["qsm", mag, right, "--out", str(tmp_path / "right"), *common]) == 0
    fixed = load_volume(tmp_path / "fixed" / "chi.nii.gz").data
    np.testing.assert_array_equal(fixed, load_volume(tmp_path / "right" / "chi.nii.gz").data)
    side_out = json.loads((tmp_path / "fixed" / "chi.json").read_text())
    assert side_out["Parameters"]["PhaseSign"] == -1
    assert phase_sign_result(side_out["Parameters"]["PhaseSignCheck"]) == "consistent"

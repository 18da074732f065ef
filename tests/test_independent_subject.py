"""Independent simulator: one small frozen subject, its BIDS layout, the import contract, and the
project's estimators measured against the simulator's truth (issue 16).

The subject is ``FROZEN_TEST_SEEDS[0]``: it is only measured here. The bounds below come from the
project's own accuracy targets and the biases documented on the project phantom (docs/measured.md),
not from this subject; the numbers measured on it are in docs/validation.md.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_myelin.io.bids import find_subject
from napari_myelin.io.volume import load_volume, read_sidecar
from napari_myelin.sims.independent import FROZEN_TEST_SEEDS, make_independent_subject, write_subject
from napari_myelin.sims.independent import subject as subject_module

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_myelin" / "sims" / "independent"


@pytest.fixture(scope="module")
def frozen():
    return make_independent_subject(FROZEN_TEST_SEEDS[0], "small")


def _tract_means(labels, sel, estimate, truth, min_voxels=10):
    """Per-tract means (estimate, truth) over ``sel`` for tracts with at least ``min_voxels`` voxels."""
    rows = [(np.nanmean(estimate[sel & (labels == lab)]), truth[sel & (labels == lab)].mean())
            for lab in np.unique(labels[sel]) if lab > 0 and (sel & (labels == lab)).sum() >= min_voxels]
    return np.array(rows)


def test_independent_subject_has_the_phantom_layout_and_plausible_truth(frozen):
    assert set(frozen.acq) == {"mese", "dwi", "gre_mag", "gre_phase", "spgr", "b1", "mts_mtw", "mts_pdw", "mts_t1w"}
    assert set(frozen.truth) == {"mese", "dwi", "gre", "spgr", "b1", "mts"}
    assert frozen.acq["mese"].shape[3] == len(frozen.acq["mese"].metadata["EchoTime"]) == 32
    dwi = frozen.acq["dwi"]
    assert dwi.bvals.max() == 3000 and dwi.shape[3] == dwi.bvals.size == 96
    np.testing.assert_allclose(np.linalg.norm(dwi.bvecs[dwi.bvals > 0], axis=1), 1.0, atol=1e-12)
    mese = frozen.truth["mese"]
    wm = mese["mask"].data & (mese["wm"].data > 0.9)
    assert 0.08 < mese["mwf"].data[wm].mean() < 0.16  # healthy adult WM (Whittall 1997, MacKay 2016)
    spgr = frozen.truth["spgr"]
    assert 0.8 < np.median(spgr["t1"].data[spgr["mask"].data & (spgr["wm"].data > 0.9)]) < 1.1  # WM T1 at 3 T
    json.dumps(frozen.parameters)  # everything drawn is recorded, as JSON


def test_independent_subjects_differ_beyond_a_warp_and_are_reproducible(frozen):
    again = subject_module._session(FROZEN_TEST_SEEDS[0], "small", subject_module._snr(None))
    assert again.anatomy["parameters"]["tract_mwf"] == frozen.parameters["tract_mwf"]
    other = subject_module._session(FROZEN_TEST_SEEDS[1], "small", subject_module._snr(None)).anatomy["parameters"]
    mine = frozen.parameters
    ratio = np.array([other["tract_mwf"][k] / mine["tract_mwf"][k] for k in mine["tract_mwf"]])
    assert np.mean(np.abs(ratio - 1) > 0.01) > 0.9  # tract myelin differs, not only its position
    assert other["ventricle_growth_mm"] != mine["ventricle_growth_mm"]
    assert other["tract_odi"] != mine["tract_odi"]
    assert other["lesions"] != mine["lesions"] or other["has_lesions"] != mine["has_lesions"]


def test_independent_writer_layout_is_found_by_bids(frozen, tmp_path):
    files = write_subject(frozen, tmp_path)
    found = find_subject(tmp_path / f"sub-{FROZEN_TEST_SEEDS[0]}")
    assert all(found.present()[k] for k in ("mese", "gre", "spgr", "b1", "dwi", "mts"))
    assert [p.name.split("_", 1)[1] for p in found.mts] == ["flip-1_mt-on_MTS.nii.gz", "flip-1_mt-off_MTS.nii.gz",
                                                             "flip-2_mt-off_MTS.nii.gz"]
    assert read_sidecar(files["mts_t1w"])["FlipAngle"] == 15.0 and read_sidecar(files["mts_mtw"])["MTState"] is True
    assert read_sidecar(files["mese"])["EchoTime"][0] == pytest.approx(0.01)
    assert read_sidecar(files["spgr"])["FlipAngle"] == [3.0, 8.0, 13.0, 18.0]
    truth = tmp_path / "derivatives" / "truth" / f"sub-{FROZEN_TEST_SEEDS[0]}"
    mwf = load_volume(truth / "mese" / "mwf.nii.gz")
    assert mwf.metadata["Units"] == "fraction" and mwf.shape == frozen.acq["mese"].shape[:3]
    assert (truth / "mese" / "labels.tsv").exists() and (truth / "simulation_parameters.json").exists()
    stored = load_volume(files["mese"]).data
    assert stored.dtype == np.int16 and np.abs(stored - frozen.acq["mese"].data).max() <= 0.5


def test_independent_simulator_imports_neither_estimators_nor_phantom():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--contract", "independent-simulator", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and " KEPT" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
    forbidden = ("napari_myelin.reconst", "napari_myelin.sims.phantom")
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith(forbidden) for n in names), f"{path.name} imports {names}"


def test_independent_mwf_estimator_on_the_frozen_subject(frozen):
    """DECAES-type fit (defaults: chi2 1.02, flip angle fitted) in WM tract voxels.

    Bounds: the project's targets (tract means r >= 0.9) and its documented chi2 bias on its own
    phantom (-2.5 points) with 1.5 points for the model differences (slice profiles, T1 saturation,
    pool widths): mean tract error in [-4, -1] points, no tract off by more than 5 points.
    """
    from napari_myelin.api import myelin_water

    me, truth = frozen.acq["mese"], frozen.truth["mese"]
    labels = truth["labels"].data
    sel = truth["mask"].data & (truth["wm"].data > 0.5) & (labels > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = myelin_water(me.data, me.echo_times, mask=sel)
    tracts = 100 * _tract_means(labels, sel, fit["mwf"], truth["mwf"].data)
    error = tracts[:, 0] - tracts[:, 1]
    assert len(tracts) >= 30
    assert np.corrcoef(tracts.T)[0, 1] >= 0.9
    assert -4.0 <= error.mean() <= -1.0
    assert np.abs(error).max() <= 5.0


def test_independent_dki_estimator_on_the_frozen_subject(frozen):
    """WLS DKI on all shells (b <= 3000) against the cumulant truth (b -> 0) in WM tract voxels.

    The fit cannot reach the b -> 0 cumulants of sticks, zeppelins and free water: the truncation
    bias of the 2nd-order expansion (Jensen & Helpern 2010) lowers MK by tens of percent and raises
    FA; the test documents it (bounds: MD within 10 %, FA high by 0-20 %, MK low by 20-60 %).
    """
    from napari_myelin.api import fit_dki

    dwi, truth = frozen.acq["dwi"], frozen.truth["dwi"]
    mask = truth["mask"].data
    sel = mask & (truth["wm"].data > 0.5) & (truth["labels"].data > 0)
    fit = fit_dki(dwi.data, dwi.bvals, dwi.bvecs, mask=mask, affine=dwi.affine)
    rel = {k: np.nanmean(fit[k][sel]) / truth[k].data[sel].mean() - 1 for k in ("md", "fa", "mk")}
    assert abs(rel["md"]) < 0.10
    assert 0.0 < rel["fa"] < 0.20
    assert -0.60 < rel["mk"] < -0.20

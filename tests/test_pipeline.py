"""One subject end to end on the small phantom: outputs, truth agreement, resume, missing inputs."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pandas as pd
import pytest

from napari_myelin.cli import main
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.workflows.pipeline import STEPS, run_subject
from napari_myelin.utils.progress import Cancelled
from napari_myelin.io.volume import load_volume


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, seed=3, size="small", snr=200.0)
    return root


@pytest.fixture(scope="module")
def first_run(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return run_subject(phantom / "sub-03", out, preset="affine"), out


def test_every_step_runs_and_writes_bids_derivatives(first_run):
    result, out = first_run
    assert [s.name for s in result.steps] == list(STEPS)
    assert {s.name: s.status for s in result.steps} == {name: "done" for name in STEPS}
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "napari-myelin"
    sub = out / "sub-03"
    for rel in ("anat/sub-03_space-mese_mwf.nii.gz", "dwi/sub-03_space-dwi_fa.nii.gz",
                "anat/sub-03_space-megre_chi.nii.gz", "anat/sub-03_space-vfa_t1.nii.gz",
                "anat/sub-03_space-vfa_mwf_qpm.nii.gz", "anat/sub-03_space-vfa_imwf.nii.gz",
                "anat/sub-03_space-mese_tracts.nii.gz", "tracts.csv", "tracts_z.csv"):
        assert (sub / rel).exists(), rel
    side = json.loads((sub / "anat/sub-03_space-mese_mwf.json").read_text())
    assert side["Units"] == "%" and side["Sources"][0]["SHA256"]


def test_tract_means_match_truth_over_the_same_labels(first_run, phantom):
    """The MWF tract means of tracts.csv against the truth MWF averaged over the same native labels.

    The pipeline fits with DECAES's clinical default (chi2, Chi2Factor 1.02), which reads about 2.5
    points low on this phantom (README, MWF section); on the 4 mm small phantom the mean error over
    tracts must stay within the issue's 3-point tolerance and no tract may be off by more than 4.
    """
    result, out = first_run
    table = pd.read_csv(out / "sub-03" / "tracts.csv")
    mwf_rows = table[(table["map"] == "mwf") & (table["n_voxels"] >= 20)].set_index("label")
    labels = load_volume(out / "sub-03/anat/sub-03_space-mese_tracts.nii.gz").data
    truth = load_volume(phantom / "derivatives/truth/sub-03/mese/mwf.nii.gz").data
    assert len(mwf_rows) >= 5
    errors = np.array([row["mean"] - 100 * truth[labels == label].mean() for label, row in mwf_rows.iterrows()])
    assert abs(errors.mean()) < 3.0, errors
    assert np.abs(errors).max() < 4.0, errors
    assert set(table.loc[table["map"] == "mwf", "units"]) == {"%"}


def test_second_run_does_no_work(first_run, phantom):
    _, out = first_run
    again = run_subject(phantom / "sub-03", out, preset="affine")
    assert {s.status for s in again.steps} == {"skipped"}
    assert not again.work_done


def test_cancel_leaves_no_manifest_and_resume_finishes(phantom, tmp_path):
    subject = tmp_path / "sub-03"
    shutil.copytree(phantom / "sub-03", subject, ignore=shutil.ignore_patterns("*MESE*", "*MEGRE*", "*VFA*", "fmap"))
    cancel = threading.Event()

    def progress(fraction, message):
        if "registering" in message:
            cancel.set()

    with pytest.raises(Cancelled):
        run_subject(subject, tmp_path / "out", preset="affine", progress=progress, cancel=cancel)
    manifests = tmp_path / "out/sub-03/.napari-myelin/steps"
    assert (manifests / "dki.json").exists() and not (manifests / "register.json").exists()
    resumed = run_subject(subject, tmp_path / "out", preset="affine")
    status = {s.name: s.status for s in resumed.steps}
    assert status["dki"] == "skipped" and status["register"] == "done" and status["stats"] == "done"
    assert status["mwf"] == status["qsm"] == status["qpm"] == status["fusion"] == "missing"
    table = pd.read_csv(tmp_path / "out/sub-03/tracts.csv")
    assert set(table["map"]) == {"fa", "md", "ad", "rd", "mk", "ak", "rk"}


def test_cli_bad_subject_folder(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["run", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no MESE, MEGRE, VFA or DWI images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

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
                "anat/sub-03_space-mese_tracts.nii.gz", "tracts.csv",
                "anat/sub-03_space-mts_mtsat.nii.gz", "anat/sub-03_space-mts_mtr.nii.gz",
                "anat/sub-03_space-mts_tracts.nii.gz", "anat/sub-03_space-MNI152NLin2009aSym_mtsat.nii.gz",
                "anat/sub-03_space-megre_r2star.nii.gz", "anat/sub-03_space-megre_chi_para.nii.gz",
                "anat/sub-03_space-megre_chi_dia.nii.gz", "anat/sub-03_space-megre_r2prime.nii.gz",
                "anat/sub-03_space-MNI152NLin2009aSym_chi_dia.nii.gz"):
        assert (sub / rel).exists(), rel
    tracts = pd.read_csv(sub / "tracts.csv")
    assert {"r2star", "chi_para", "chi_dia", "r2prime"} <= set(tracts["map"])  # chi-separation in the tract table
    assert not (sub / "tracts_z.csv").exists()  # no z-score and no flag without a normative model
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


def test_mtsat_tract_means_match_truth_over_the_same_labels(first_run, phantom):
    """The MTsat step's tract means (tracts.csv, B1-corrected small-angle MTsat in p.u.) against the phantom's MTsat
    averaged over the same native labels: mean relative error within 3 %, every tract within 6 %; MTR rows too."""
    result, out = first_run
    table = pd.read_csv(out / "sub-03" / "tracts.csv")
    rows = table[(table["map"] == "mtsat") & (table["n_voxels"] >= 20)].set_index("label")
    labels = load_volume(out / "sub-03/anat/sub-03_space-mts_tracts.nii.gz").data
    truth = load_volume(phantom / "derivatives/truth/sub-03/mts/mtsat.nii.gz").data
    assert len(rows) >= 5
    errors = np.array([row["mean"] / truth[labels == label].mean() - 1 for label, row in rows.iterrows()])
    assert abs(errors.mean()) < 0.03, errors
    assert np.abs(errors).max() < 0.06, errors
    assert set(table.loc[table["map"] == "mtsat", "units"]) == {"p.u."}
    assert set(table.loc[table["map"] == "mtr", "units"]) == {"%"}


def test_second_run_does_no_work(first_run, phantom):
    _, out = first_run
    again = run_subject(phantom / "sub-03", out, preset="affine")
    assert {s.status for s in again.steps} == {"skipped"}
    assert not again.work_done


def test_cancel_leaves_no_manifest_and_resume_finishes(phantom, tmp_path):
    subject = tmp_path / "sub-03"
    shutil.copytree(phantom / "sub-03", subject,
                    ignore=shutil.ignore_patterns("*MESE*", "*MEGRE*", "*VFA*", "*MTS*", "fmap"))
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
    assert status["mwf"] == status["qsm"] == status["qpm"] == status["mtsat"] == status["fusion"] == "missing"
    table = pd.read_csv(tmp_path / "out/sub-03/tracts.csv")
    assert set(table["map"]) == {"fa", "md", "ad", "rd", "mk", "ak", "rk"}


def test_cli_bad_subject_folder(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["run", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no MESE, MEGRE, VFA, MTS or DWI images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


FACTORS = (0.96, 0.98, 1.0, 1.02, 1.04)


def _control_copies(sub, deriv):
    """Controls sub-c0..c4: the subject's tracts.csv and template maps times FACTORS (mean 1)."""
    from napari_myelin.io.volume import save_volume

    stats_cols = ["mean", "sd", "median", "q1", "q3", "iqr", "min", "max"]
    table = pd.read_csv(sub / "tracts.csv")
    for i, f in enumerate(FACTORS):
        root = deriv / f"sub-c{i}"
        (root / "anat").mkdir(parents=True)
        t = table.assign(subject=root.name)
        t[stats_cols] = t[stats_cols] * f
        t.to_csv(root / "tracts.csv", index=False)
        for path in (sub / "anat").glob("sub-03_space-MNI152NLin2009aSym_*.nii.gz"):
            vol = load_volume(path)
            save_volume(vol.data * f, root / "anat" / path.name.replace("sub-03", root.name), vol.affine,
                        sidecar=vol.metadata)


def test_normative_model_scores_and_abnormality_map(first_run, phantom, tmp_path, capsys):
    """Controls are the subject's outputs times FACTORS: the subject scores z = 0 and is not flagged; a copy
    with half of every myelin map gets the analytic predictive z and an abnormality map; the outputs say SYNTHETIC."""
    from scipy import stats as sstats

    from napari_myelin.io.volume import save_volume
    from napari_myelin.stats.normative_voxel import MYELIN_SIGN
    from napari_myelin.workflows.abnormality import abnormality_map
    from napari_myelin.workflows.pipeline import run_step

    _, out = first_run
    sub = out / "sub-03"
    _control_copies(sub, tmp_path / "deriv")
    model = tmp_path / "model"
    assert main(["normative", "build", str(tmp_path / "deriv"), "--out", str(model), "--covariates",
                 "--synthetic", "--name", "copies"]) == 0
    assert "SYNTHETIC copies" in capsys.readouterr().out
    assert run_step(phantom / "sub-03", out, "stats", normative=str(model)).status == "done"
    scored = pd.read_csv(sub / "tracts_z.csv")
    # rows the model can score: a cell for the tract and map, with a spread (controls all 0 have none)
    ok = scored[(scored["status"] == "ok") & (scored["norm_sd"] > 0)]
    assert len(ok) >= 0.8 * (scored["status"] == "ok").sum()
    np.testing.assert_allclose(ok["z"], 0.0, atol=1e-6)
    np.testing.assert_allclose(ok["df"], 4)
    assert not ok["abnormal"].any() and not scored["D_abnormal"].any()
    assert set(scored["normative_model"]) == {"SYNTHETIC copies"}
    patient = tmp_path / "results" / "sub-p"
    shutil.copytree(sub, patient)
    for path in list(patient.rglob("sub-03_*")):
        path.rename(path.with_name(path.name.replace("sub-03", "sub-p")))
    # demyelination: every native myelin-sensitive map halved (the controls' residuals are perfectly correlated
    # across maps, being copies times one factor, so a deficit in one map alone is diluted by design)
    for path in sorted(patient.glob("*/sub-p_space-*_*.nii.gz")):
        grid, name = path.name[len("sub-p_space-"):-len(".nii.gz")].split("_", 1)
        if grid != "MNI152NLin2009aSym" and MYELIN_SIGN.get(name) == 1:
            vol = load_volume(path)
            save_volume(vol.data * 0.5, path, vol.affine, sidecar=vol.metadata)
    healthy = abnormality_map(sub, model)
    sick = abnormality_map(patient, model)
    # half the MWF: t = -0.5 / (SD(FACTORS) sqrt(1 + 1/5)) on 4 degrees of freedom (up to interpolation)
    t = -0.5 / (np.std(FACTORS, ddof=1) * np.sqrt(1.2))
    z = -sstats.norm.isf(sstats.t.sf(abs(t), 4))
    wm = np.isfinite(sick.q)
    assert np.nanmedian(sick.z["mwf"][wm]) == pytest.approx(z, abs=0.5)
    assert sick.abnormal.mean() > 5 * healthy.abnormal.mean()
    assert (patient / "abnormal_tracts.csv").exists() and (patient / "anat/sub-p_space-vfa_abnormality.nii.gz").exists()
    assert json.loads((patient / "anat/sub-p_space-vfa_abnormality.json").read_text())["NormativeModel"]["Synthetic"]
    assert main(["abnormality", str(patient), "--normative", str(tmp_path / "nope")]) == 2

"""``napari-myelin demo`` on the small phantom: report pictures, tracts.csv against truth, no rework."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from napari_myelin.cli import main
from napari_myelin.cli.demo import truth_tract_means


def test_demo_writes_report_and_a_second_run_does_no_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "small", "--seed", "2", "--controls", "0"]) == 0
    first = capsys.readouterr().out
    assert not (out / "normative").exists()  # --controls 0 skips the normative part (tested below)
    report = np.asarray(Image.open(out / "report.png"))
    assert report.shape[1] > 2.5 * report.shape[0]  # three views side by side
    thirds = np.array_split(report[..., :3].astype(float), 3, axis=1)
    assert all(third.mean() > 5 for third in thirds)  # each view shows the brain, not a black canvas
    assert Image.open(out / "tracts.png").size[0] > 400
    # the first thing the demo writes: the subject report of the phantom subject (PDF and HTML)
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert "<b>mwf (%)</b>" in (out / "report.html").read_text(encoding="utf-8")
    assert first.index(f"wrote {out / 'report.pdf'}") < first.index(f"wrote {out / 'tracts.csv'}")
    table = pd.read_csv(out / "tracts.csv")
    mwf = table[(table["map"] == "mwf") & (table["n_voxels"] >= 20)].set_index("name")["mean"]
    truth = truth_tract_means(out / "phantom/derivatives/truth/sub-02/mese/mwf.nii.gz",
                              out / "results/sub-02/anat/sub-02_space-mese_tracts.nii.gz")
    errors = (mwf - truth.reindex(mwf.index)).dropna()
    assert len(errors) >= 5 and abs(errors.mean()) < 3.0  # the MWF estimator's tolerance (README)
    assert "done" in first
    assert main(["demo", "--out", str(out), "--size", "small", "--seed", "2", "--controls", "0"]) == 0
    second = capsys.readouterr().out
    summary = [line.split() for line in second.splitlines() if line.split()[:1] and line.split()[0] in
               ("mwf", "dki", "qsm", "qpm", "mtsat", "register", "tracts", "calibrate", "chisep", "fusion", "stats")]
    assert len(summary) == 11 and {row[1] for row in summary} == {"skipped"}


def test_normative_demo_labels_synthetic_and_leaves_the_healthy_subject_unflagged(tmp_path, capsys):
    """The demo's normative part with 3 controls of the independent simulator (the default is 8): the patient's
    tracts_z.csv and report say SYNTHETIC and its abnormality score is higher in its lesions than in the rest of
    its white matter; the healthy subject gets no flag."""
    import json

    from napari_myelin.cli.demo import DEMO_HEALTHY_SEED, DEMO_PATIENT_SEED, independent_seeds, normative_demo
    from napari_myelin.io.volume import load_volume

    written = normative_demo(tmp_path / "normative", 3)
    out = capsys.readouterr().out
    patient = f"sub-{independent_seeds(DEMO_PATIENT_SEED, 1, True)[0]}"
    healthy = f"sub-{independent_seeds(DEMO_HEALTHY_SEED, 1, False)[0]}"
    results = tmp_path / "normative" / "results"
    for sub in (patient, healthy):
        scored = pd.read_csv(results / sub / "tracts_z.csv")
        assert set(scored["normative_model"]) == {"SYNTHETIC demo controls"}
        assert "SYNTHETIC" in (results / sub / "report.html").read_text(encoding="utf-8")
        assert results / sub / "tracts_z.csv" in written
    model = json.loads((tmp_path / "normative" / "model" / "model.json").read_text())
    assert model["Synthetic"] and model["Controls"]["N"] == 3
    healthy_rows = pd.read_csv(results / healthy / "tracts_z.csv")
    assert not healthy_rows["abnormal"].any() and not healthy_rows["D_abnormal"].any()
    assert f"healthy subject ({healthy})" in out
    score = load_volume(results / patient / "anat" / f"{patient}_space-vfa_abnormality.nii.gz").data
    truth = tmp_path / "normative" / "bids" / "derivatives" / "truth" / patient / "spgr"
    lesion = load_volume(truth / "lesion.nii.gz").data > 0
    wm = (load_volume(truth / "wm.nii.gz").data >= 0.5) & ~lesion & np.isfinite(score)
    assert np.nanmedian(score[lesion]) > np.nanmedian(score[wm]) + 1.0

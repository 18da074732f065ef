"""``napari-myelin demo`` on the small phantom: report pictures, tracts.csv against truth, no rework."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from napari_myelin.cli import main
from napari_myelin.cli.demo import truth_tract_means


def test_demo_writes_report_and_a_second_run_does_no_work(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "small", "--seed", "2"]) == 0
    first = capsys.readouterr().out
    assert not (out / "normative").exists()  # the normative part is off by default (not calibrated yet)
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
    assert main(["demo", "--out", str(out), "--size", "small", "--seed", "2"]) == 0
    second = capsys.readouterr().out
    summary = [line.split() for line in second.splitlines() if line.split()[:1] and line.split()[0] in
               ("mwf", "dki", "qsm", "qpm", "mtsat", "register", "tracts", "calibrate", "chisep", "fusion", "stats")]
    assert len(summary) == 11 and {row[1] for row in summary} == {"skipped"}

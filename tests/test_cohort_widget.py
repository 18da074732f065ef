"""The "Cohort" dock: runs a cohort through its worker with live per-subject status, opens a finished
subject's maps and the group table."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt

from napari_myelin.io.volume import load_volume
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.widgets.cohort import CohortWidget
from napari_myelin.workflows.pipeline import STEPS

from ._gaps import MAX_GAP_MS, GapMeter


def test_cohort_widget_runs_follows_and_opens(make_napari_viewer, qtbot, tmp_path):
    write_phantom(tmp_path / "ph", seed=5, size="small", snr=100.0)
    bids = tmp_path / "bids"
    shutil.copytree(tmp_path / "ph/sub-05/dwi", bids / "sub-05/dwi")  # a DWI-only subject: a quick cohort
    (bids / "sub-06").mkdir()  # no images: the subject fails at once with its sentence
    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    widget.bids.value = bids
    widget.out.value = tmp_path / "out"
    widget.workers.value = 1
    widget.preset.value = "affine"
    live = []  # (subject, step, status), rows in the table and whether the cohort had ended, at each signal
    widget._relay.stepped.connect(lambda *a: live.append((a[:3], widget.table.rowCount(), widget.result is not None)))
    with GapMeter() as meter, qtbot.waitSignal(widget.runner.finished, timeout=300_000) as blocker:
        widget.start()
    assert blocker.args == [True], widget.runner.error
    assert meter.longest_cpu < MAX_GAP_MS, f"event loop blocked {meter.longest_cpu:.0f} ms (CPU)"
    expected = {n: "done" if n in ("dki", "register", "tracts", "stats") else "missing" for n in STEPS}
    assert {step: status for (sub, step, status), _, _ in live if sub == "sub-05"} == expected
    assert len(live) == len(STEPS) + 1 and ("sub-06", "inputs", "failed") in [news for news, _, _ in live]
    assert all(n_rows >= 1 and not ended for _, n_rows, ended in live)  # shown while the cohort ran
    rows = {widget.table.item(i, 0).text(): [widget.table.item(i, j).text() for j in range(1, 5)]
            for i in range(widget.table.rowCount())}
    assert rows["sub-05"][:2] == ["succeeded", f"{len(STEPS)}/{len(STEPS)}"]
    assert rows["sub-06"][0] == "failed" and "images were found in anat/ or dwi/" in rows["sub-06"][3]
    assert "dashboard: http://127.0.0.1:" in widget.news.text()
    assert "1 of 2 subjects succeeded" in widget.news.text()

    widget.table.selectRow(list(rows).index("sub-05"))
    layers = widget.open_subject()
    assert "sub-05 FA · dwi" in [layer.name for layer in layers]
    fa = viewer.layers["sub-05 FA · dwi"]
    fa_file = load_volume(tmp_path / "out/sub-05/dwi/sub-05_space-dwi_fa.nii.gz")
    np.testing.assert_allclose(np.sort(fa.data.ravel()), np.sort(fa_file.data.ravel()))

    view = widget.open_group_table()
    table = pd.read_csv(tmp_path / "out/group/tracts_long.csv")
    model = view.model()
    assert (model.rowCount(), model.columnCount()) == table.shape
    assert model.headerData(0, Qt.Horizontal) == "subject" and model.headerData(0, Qt.Vertical) == "1"
    assert model.data(model.index(0, list(table.columns).index("mean"))) == str(table["mean"].iloc[0])

"""The "Subject pipeline" dock runs the pipeline through its worker and opens the results."""

from __future__ import annotations

import shutil

import numpy as np

from napari_myelin.sims.phantom import write_phantom
from napari_myelin.io.volume import load_volume
from napari_myelin.widgets.pipeline import PipelineWidget


def test_pipeline_widget_runs_and_opens_results(make_napari_viewer, qtbot, tmp_path):
    write_phantom(tmp_path / "ph", seed=5, size="small", snr=100.0)
    subject = tmp_path / "sub-05"
    shutil.copytree(tmp_path / "ph" / "sub-05", subject,
                    ignore=shutil.ignore_patterns("*MESE*", "*MEGRE*", "*VFA*", "*MTS*", "fmap"))
    viewer = make_napari_viewer()
    widget = PipelineWidget(viewer)
    widget.subject.value = subject
    widget.out.value = tmp_path / "out"
    widget.preset.value = "affine"
    with qtbot.waitSignal(widget.runner.finished, timeout=300_000) as blocker:
        widget.run()
    assert blocker.args == [True], widget.runner.error
    status = {widget.table.item(i, 0).text(): widget.table.item(i, 1).text() for i in range(widget.table.rowCount())}
    assert status["dki"] == "done" and status["mwf"] == "missing" and status["stats"] == "done"
    fa_layer = viewer.layers["sub-05 FA · dwi"]
    fa_file = load_volume(tmp_path / "out/sub-05/dwi/sub-05_space-dwi_fa.nii.gz")
    assert fa_layer.colormap.name == "gray"
    inside = np.isfinite(fa_file.data) & (fa_file.data != 0)  # robust limits from the map's voxels
    np.testing.assert_allclose(fa_layer.contrast_limits, np.percentile(fa_file.data[inside], [1, 99]), rtol=1e-5)
    np.testing.assert_allclose(np.sort(fa_layer.data.ravel()), np.sort(fa_file.data.ravel()))
    tracts = viewer.layers["sub-05 tracts · dwi"]
    assert "Corpus Callosum genu" in set(tracts.features["name"])

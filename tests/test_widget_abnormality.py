"""The "NAWM abnormality" dock: refuses missing inputs, computes a subject's z-maps against a model and shows
them as diverging z layers with a colorbar, the abnormal WM as labels, and the flagged tracts."""

from __future__ import annotations

import shutil

import numpy as np
from napari.layers import Layer

from napari_myelin._reader import read_results
from napari_myelin.cli import main
from napari_myelin.io.volume import load_volume, save_volume
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.widgets.abnormality import AbnormalityWidget, parse_covariates
from napari_myelin.workflows.pipeline import run_subject

from ._gaps import MAX_GAP_MS, GapMeter


def test_abnormality_widget(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = AbnormalityWidget(viewer)
    assert widget.compute() is None and "choose the subject" in str(widget.runner.error)
    assert parse_covariates("age=41 sex=F") == {"age": 41.0, "sex": "F"}
    # a DWI-only subject through the pipeline; controls = its template maps times 0.96 ... 1.04
    write_phantom(tmp_path / "ph", seed=5, size="small", snr=100.0)
    shutil.copytree(tmp_path / "ph" / "sub-05", tmp_path / "sub-05",
                    ignore=shutil.ignore_patterns("*MESE*", "*MEGRE*", "*VFA*", "*MTS*", "fmap"))
    run_subject(tmp_path / "sub-05", tmp_path / "out", preset="affine")
    sub = tmp_path / "out" / "sub-05"
    for i, f in enumerate((0.96, 0.98, 1.0, 1.02, 1.04)):
        root = tmp_path / "deriv" / f"sub-c{i}"
        (root / "anat").mkdir(parents=True)
        shutil.copy(sub / "tracts.csv", root / "tracts.csv")
        for name in ("fa", "mk"):
            vol = load_volume(sub / "anat" / f"sub-05_space-MNI152NLin2009aSym_{name}.nii.gz")
            save_volume(vol.data * f, root / "anat" / f"{root.name}_space-MNI152NLin2009aSym_{name}.nii.gz",
                        vol.affine, sidecar=vol.metadata)
    assert main(["normative", "build", str(tmp_path / "deriv"), "--out", str(tmp_path / "model"), "--covariates",
                 "--synthetic"]) == 0
    for data, attrs, kind in read_results(sub):  # the subject is open, as when a clinician reviews it
        viewer.add_layer(Layer.create(data, attrs, kind))
    widget.results.value = sub
    widget.model.value = tmp_path / "model"
    with GapMeter() as meter, qtbot.waitSignal(widget.runner.finished, timeout=300_000) as blocker:
        widget.compute()
    assert blocker.args == [True], widget.runner.error
    assert meter.longest_cpu < MAX_GAP_MS, f"event loop blocked {meter.longest_cpu:.0f} ms (CPU)"
    score = viewer.layers["SYNTHETIC abnormality"]
    assert score.colormap.name == "bwr" and tuple(score.contrast_limits) == (-4.0, 4.0) and score.colorbar.visible
    z_fa = viewer.layers["SYNTHETIC z fa"]
    np.testing.assert_allclose(np.sort(z_fa.data[np.isfinite(z_fa.data)]),
                               np.sort(widget.result.z["fa"][np.isfinite(widget.result.z["fa"])]), rtol=1e-6)
    assert "SYNTHETIC abnormal WM" in viewer.layers
    assert widget.table.rowCount() == int((widget.result.tracts["abnormal_voxels"] > 0).sum())

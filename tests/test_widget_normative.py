"""The normative-model selectors of the "ROI statistics" and "Subject pipeline" docks: no z-score and no flag
without a model; with one, z/q/abnormal columns (SYNTHETIC in the headers and the export for a synthetic model)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from napari.layers import Layer

from napari_myelin._layers import volume_to_layer
from napari_myelin.io.volume import Volume
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.stats.normative_model import model_from_table, save_normative_model
from napari_myelin.utils.errors import InputError
from napari_myelin.widgets._normative import DEMO, FOLDER, NO_MODEL, flag_summary, parse_covariates
from napari_myelin.widgets.pipeline import PipelineWidget
from napari_myelin.widgets.stats import TABLE_COLUMNS, RoiStatsWidget

LUT = pd.DataFrame({"index": [1, 2], "name": ["CST L", "CST R"], "abbreviation": ["CST_L", "CST_R"]})


@pytest.fixture
def tract_viewer(make_napari_viewer):
    """FA (ratio) with 0.5 in CST L and 0.2 in CST R, and the two tracts as a labels layer with its LUT."""
    viewer = make_napari_viewer()
    fa = np.full((10, 10, 6), 0.5, np.float32)
    fa[5:] = 0.2
    data, attrs, kind = volume_to_layer(Volume(fa, np.eye(4)), name="FA", metadata={"units": "ratio"})
    layer = viewer.add_layer(Layer.create(data, attrs, kind))
    shown = np.asarray(layer.data)  # display order: the tracts are drawn on the layer's own grid
    inner = np.zeros(shown.shape, bool)
    inner[1:-1, 1:-1, 1:-1] = True
    atlas = np.where(inner, np.where(shown > 0.4, 1, 2), 0).astype(np.int32)
    viewer.add_labels(atlas, name="tracts", scale=layer.scale, translate=layer.translate, features=LUT,
                      metadata={"lut": LUT.to_dict(orient="list")})
    return viewer, layer


def _model(folder, synthetic: bool):
    """A covariate-free model of 10 controls: FA 0.5 +- 0.02 in both tracts (CST R at 0.2 is abnormal)."""
    table = pd.DataFrame({"label": [1, 2], "name": ["CST L", "CST R"], "map": "fa", "units": "ratio",
                          "n_subjects": 10, "mean": 0.5, "sd": 0.02})
    save_normative_model(model_from_table(table, {"Name": "two tracts", "Synthetic": synthetic}), folder)
    return folder


def _compute(widget, qtbot, fa, viewer):
    widget.maps.value = [fa]
    widget.labels.value = viewer.layers["tracts"]
    with qtbot.waitSignal(widget.runner.finished, timeout=30000) as blocker:
        widget.compute()
    assert blocker.args == [True], widget.runner.error
    return [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]


def test_stats_dock_scores_only_with_a_model_and_says_synthetic(tract_viewer, qtbot, tmp_path):
    viewer, fa = tract_viewer
    widget = RoiStatsWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.normative.kind.value == NO_MODEL
    assert _compute(widget, qtbot, fa, viewer) == list(TABLE_COLUMNS)  # no model: no z, no flag
    assert widget.scores is None
    widget.normative.kind.value = FOLDER
    assert not widget.normative.folder.native.isHidden()  # shown once "model folder" is chosen
    widget.normative.folder.value = tmp_path / "nothing"
    widget.maps.value = [fa]
    assert widget.compute() is None  # a folder without model.json: refused with its sentence
    headers = None
    for synthetic, prefix in ((True, "SYNTHETIC "), (False, "")):
        widget.normative.folder.value = _model(tmp_path / f"model{synthetic}", synthetic)
        headers = _compute(widget, qtbot, fa, viewer)
        assert headers[-3:] == [f"{prefix}z", f"{prefix}q", f"{prefix}abnormal"]
        rows = widget.scores.rows.set_index("label")
        assert not rows.loc[1, "abnormal"] and rows.loc[2, "abnormal"] and rows.loc[2, "z"] < -5
        exported = pd.read_csv(widget.export_csv(tmp_path / f"scored{synthetic}.csv"))
        assert exported["normative_model"].str.startswith("SYNTHETIC").all() == synthetic
    widget.normative.kind.value = DEMO  # the shipped demo table: another atlas's names here, refused in one sentence
    assert widget.normative.prefix() == "SYNTHETIC "
    with qtbot.waitSignal(widget.runner.finished, timeout=30000) as blocker:
        widget.compute()
    assert blocker.args == [False] and "normative" in str(widget.runner.error)


def test_covariates_are_parsed_or_refused():
    assert parse_covariates("age=41, sex=F site=A") == {"age": 41.0, "sex": "F", "site": "A"}
    with pytest.raises(InputError, match="is not NAME=VALUE"):
        parse_covariates("age 41")


def test_pipeline_dock_scores_with_the_synthetic_demo_model(make_napari_viewer, qtbot, tmp_path):
    write_phantom(tmp_path / "ph", seed=5, size="small", snr=100.0)
    subject = tmp_path / "sub-05"
    shutil.copytree(tmp_path / "ph" / "sub-05", subject,
                    ignore=shutil.ignore_patterns("*MESE*", "*MEGRE*", "*VFA*", "*MTS*", "fmap"))
    widget = PipelineWidget(make_napari_viewer())
    widget.subject.value, widget.out.value, widget.preset.value = subject, tmp_path / "out", "affine"
    widget.open_results.value = False
    for kind in (NO_MODEL, DEMO):
        widget.normative.kind.value = kind
        with qtbot.waitSignal(widget.runner.finished, timeout=600_000) as blocker:
            widget.run()
        assert blocker.args == [True], widget.runner.error
        rows = {widget.table.item(i, 0).text(): widget.table.item(i, 3).text() for i in range(widget.table.rowCount())}
        scored = tmp_path / "out/sub-05/tracts_z.csv"
        if kind == NO_MODEL:
            assert "normative" not in rows and not scored.exists()
        else:
            assert rows["normative"].startswith("SYNTHETIC ") and scored.exists()
            assert flag_summary(scored)[0]["note"] == rows["normative"]
    widget.normative.kind.value = FOLDER
    widget.normative.folder.value = tmp_path
    assert widget.run() is None  # not a model folder: refused before any work

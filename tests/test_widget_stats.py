"""The "ROI statistics" dock widget: new ROI layer, drawn ROI, compute through the Runner, CSV export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.layers import Layer
from qtpy.QtWidgets import QApplication
from skimage import draw

from napari_myelin._layers import volume_to_layer
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.stats import RoiStatsWidget

from .conftest import oblique_affine


@pytest.fixture
def viewer_with_maps(make_napari_viewer):
    viewer = make_napari_viewer()
    aff = oblique_affine(zooms=(1.2, 0.9, 2.5), angle_deg=0.0, lps=True)  # LPS, anisotropic
    rng = np.random.default_rng(5)
    shape = (14, 12, 8)
    fa = rng.random(shape).astype(np.float32)
    mwf = rng.normal(0.1, 0.02, shape).astype(np.float32)
    layers = {}
    for name, arr, units in (("FA", fa, "ratio"), ("MWF", mwf, "fraction")):
        data, attrs, kind = volume_to_layer(Volume(arr, aff), name=name, metadata={"units": units, "method": "test"})
        layers[name] = viewer.add_layer(Layer.create(data, attrs, kind))
    return viewer, layers, aff


def test_draw_roi_compute_and_export(viewer_with_maps, qtbot, tmp_path):
    viewer, layers, aff = viewer_with_maps
    fa, mwf = layers["FA"], layers["MWF"]
    widget = RoiStatsWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value = fa
    roi = widget.new_roi_layer()
    assert roi.data.shape == fa.data.shape and roi.data.dtype == np.int32
    np.testing.assert_allclose(roi.scale, fa.scale)
    np.testing.assert_allclose(roi.translate, fa.translate)
    assert widget.labels.value is roi
    # draw two ROIs programmatically (display order z, y, x), as a paint brush would
    roi.data[3, 2:6, 4:9] = 1
    roi.data[5, 7:10, 1:5] = 2
    roi.refresh()
    widget.maps.value = [fa, mwf]
    widget.labels.value = roi
    with qtbot.waitSignal(widget.runner.finished, timeout=30000) as blocker:
        widget.compute()
    assert blocker.args == [True]
    assert widget.table.rowCount() == 4
    # features of the labels layer: one row per label, with napari's index column
    feats = roi.features
    assert feats["index"].tolist() == [1, 2]
    assert feats["fa_mean"].iloc[0] == pytest.approx(float(fa.data[roi.data == 1].astype(float).mean()), rel=1e-12)
    # export, read back with pandas: expected rows, units and values equal to numpy
    path = widget.export_csv(tmp_path / "roi.csv")
    table = pd.read_csv(path)
    assert len(table) == 4 and set(table["map"]) == {"fa", "mwf"}
    voxel_volume = 1.2 * 0.9 * 2.5
    for lab in (1, 2):
        mask = roi.data == lab
        for name, layer, scale, units in (("fa", fa, 1.0, "ratio"), ("mwf", mwf, 100.0, "%")):
            row = table[(table["label"] == lab) & (table["map"] == name)].iloc[0]
            values = layer.data[mask].astype(float) * scale
            assert row["units"] == units
            assert row["n_voxels"] == mask.sum()
            assert row["volume_mm3"] == pytest.approx(mask.sum() * voxel_volume, rel=1e-12)
            assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row["sd"] == pytest.approx(values.std(ddof=1), rel=1e-12)
            assert row["median"] == pytest.approx(np.median(values), rel=1e-12)
            assert row["max"] == pytest.approx(values.max(), rel=1e-12)
            assert row["source"] == f"napari layer '{layer.name}'" and row["method"] == "test"
    widget.layout_choice.value = "wide"
    wide = pd.read_csv(widget.export_csv(tmp_path / "wide.csv"))
    assert wide["label"].tolist() == [1, 2] and wide["mwf_units"].eq("%").all()
    # selecting a row highlights its label
    for r in range(widget.table.rowCount()):
        if widget.table.item(r, 0).data(0) == 2:
            widget.table.selectRow(r)
            break
    assert roi.selected_label == 2 and roi.show_selected_label
    # copy to the clipboard (tab-separated) and a box plot with one box per ROI
    text = widget.copy_to_clipboard()
    assert QApplication.clipboard().text() == text
    assert text.splitlines()[0].split("\t")[:3] == ["subject", "label", "name"]
    assert len(text.splitlines()) == 3  # wide layout: header + 2 labels
    ax = widget.figure.axes[0]
    assert len(ax.get_xticklabels()) == 2
    widget.plot_map.value = "mwf"
    widget.plot_kind.value = "histogram"
    ax = widget.figure.axes[0]
    assert len(ax.patches) == 2  # one step histogram per ROI, in % like the table
    counts, edges = np.histogram(100 * mwf.data[roi.data == 1].astype(float), bins=30)
    assert ax.get_xlim()[0] <= edges[0] and ax.get_xlim()[1] >= edges[-1] and edges[-1] > 1.0
    # a CSV in a missing folder: refused, nothing written
    assert widget.export_csv(tmp_path / "missing" / "x.csv") is None
    assert not (tmp_path / "missing").exists()


def test_shapes_to_roi(viewer_with_maps, qtbot):
    viewer, layers, aff = viewer_with_maps
    fa = layers["FA"]
    widget = RoiStatsWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value = fa
    roi = widget.new_roi_layer()
    # a polygon and an ellipse drawn (in world mm) on axial slice 4 of the map
    z = 4
    poly_vox = np.array([[z, 1.0, 2.0], [z, 8.0, 3.0], [z, 9.0, 10.0], [z, 3.0, 9.0]])
    ell_vox = np.array([[z, 2.0, 1.0], [z, 2.0, 5.0], [z, 6.0, 5.0], [z, 6.0, 1.0]])
    to_world = lambda v: v * fa.scale + fa.translate  # noqa: E731
    shapes = viewer.add_shapes([to_world(poly_vox), to_world(ell_vox)], shape_type=["polygon", "ellipse"])
    widget.shapes.value = shapes
    widget.labels.value = roi
    values = widget.shapes_to_roi()
    assert values == [1, 2]
    expected = np.zeros(roi.data.shape[1:], int)
    rr, cc = draw.polygon(poly_vox[:, 1], poly_vox[:, 2], shape=expected.shape)
    expected[rr, cc] = 1
    rr, cc = draw.ellipse(4.0, 3.0, 2.0, 2.0, shape=expected.shape)
    expected[rr, cc] = 2
    np.testing.assert_array_equal(roi.data[z], expected)
    assert (roi.data[np.arange(roi.data.shape[0]) != z] == 0).all()
    assert (roi.data == 1).sum() > 30


def test_bad_input_is_notified(viewer_with_maps, qtbot):
    viewer, layers, _ = viewer_with_maps
    widget = RoiStatsWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value = layers["FA"]
    roi = widget.new_roi_layer()
    widget.labels.value = roi
    widget.maps.value = []
    assert widget.compute() is None
    assert isinstance(widget.runner.error, InputError) and "select at least one map" in str(widget.runner.error)
    widget.maps.value = [layers["FA"]]
    assert widget.compute() is None  # nothing drawn yet
    assert "no voxel is labelled" in str(widget.runner.error)
    assert widget.shapes_to_roi() is None  # no shapes layer
    assert widget.export_csv() is None  # nothing computed yet


def test_atlas_labels_layer_with_lut(viewer_with_maps, qtbot):
    viewer, layers, aff = viewer_with_maps
    fa = layers["FA"]
    lut = pd.DataFrame({"index": [1, 2, 3], "name": ["CST L", "CST R", "Fornix"],
                        "abbreviation": ["CST_L", "CST_R", "FX"]})
    atlas = np.zeros(fa.data.shape, np.int32)
    atlas[2:5, 1:6, 2:7] = 1
    atlas[2:5, 6:11, 2:7] = 2  # label 3 (Fornix) has no voxel
    viewer.add_labels(atlas, name="tracts", scale=fa.scale, translate=fa.translate, features=lut,
                      metadata={"lut": lut.to_dict(orient="list")})
    widget = RoiStatsWidget(viewer)
    qtbot.addWidget(widget)
    widget.maps.value = [fa]
    widget.labels.value = viewer.layers["tracts"]
    with qtbot.waitSignal(widget.runner.finished, timeout=30000) as blocker:
        widget.compute()
    assert blocker.args == [True]
    table = widget.result.table
    assert table["name"].tolist() == ["CST L", "CST R", "Fornix"]
    assert table["status"].tolist() == ["ok", "ok", "empty: no voxel has this label"]
    # the labels layer's grid comes from scale/translate only (no stored affine): world coordinates match
    assert table["mean"].iloc[1] == pytest.approx(float(fa.data[atlas == 2].astype(float).mean()), rel=1e-9)
    feats = viewer.layers["tracts"].features
    assert feats["abbreviation"].tolist() == ["CST_L", "CST_R", "FX"]  # the LUT's columns are kept
    assert feats["fa_mean"].iloc[0] == pytest.approx(float(fa.data[atlas == 1].astype(float).mean()), rel=1e-9)
    assert np.isnan(feats["fa_mean"].iloc[2])

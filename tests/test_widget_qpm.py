"""The "Relaxometry (QPM)" dock widget: a small SPGR series fitted through the thread worker, then calibrated."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_myelin._layers import to_display, volume_to_layer
from napari_myelin.reconst import qpm
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.qpm import QPMWidget

from .conftest import oblique_affine
from .test_qpm import synthetic


def _add(viewer, vol, name):
    return viewer.add_layer(Layer.create(*volume_to_layer(vol, name=name)))


def test_widget_fits_and_calibrates_through_worker(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    d = synthetic(shape=(16, 14, 6), seed=3)
    affine = oblique_affine(zooms=(2.0, 2.0, 2.5), angle_deg=0.0, lps=True)  # LPS storage
    spgr = Volume(d["signals"].astype(np.float32), affine,
                  metadata={"FlipAngle": d["fa"].tolist(), "RepetitionTime": d["tr"]})
    _add(viewer, spgr, "spgr")
    _add(viewer, Volume(d["b1"].astype(np.float32), affine), "b1")
    widget = QPMWidget(viewer)
    assert widget.spgr.value is viewer.layers["spgr"]
    widget.b1.value = viewer.layers["b1"]
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()
    assert blocker.args == [True]
    ref = qpm.qpm(d["signals"].astype(np.float32), d["fa"], d["tr"], b1=d["b1"].astype(np.float32))
    for key, label in (("t1", "T1 (s)"), ("pd", "PD"), ("mtv", "MTV"), ("qpm_myelin", "QPM myelin (fraction)")):
        layer = viewer.layers[f"{label} · spgr"]
        np.testing.assert_allclose(layer.data, to_display(ref[key], affine), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.scale, viewer.layers["spgr"].scale[1:])
    assert viewer.layers["T1 (s) · spgr"].metadata["units"] == "s"
    # noise-free two-pool data: in WM (water content 0.7, no free water) the myelin map is the true MWF
    wm_d = to_display(d["wm"], affine)
    np.testing.assert_allclose(viewer.layers["QPM myelin (fraction) · spgr"].data[wm_d], to_display(d["mwf"], affine)[wm_d], atol=1e-4)

    # calibration panel: MWF layer and WM mask, fit, scatter + quadratic drawn, calibrated layer added
    _add(viewer, Volume(d["mwf"].astype(np.float32), affine), "mwf")
    viewer.add_layer(Layer.create(*volume_to_layer(Volume(d["wm"].astype(np.uint8), affine), name="wm",
                                                   layer_type="labels")))
    widget.cal_mwf.value = viewer.layers["mwf"]
    assert widget.cal_qpm.value is viewer.layers["QPM myelin (fraction) · spgr"]
    widget.cal_mask.value = viewer.layers["wm"]
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.calibrate()
    assert blocker.args == [True]
    cal = widget.calibration
    assert cal.n == int(d["wm"].sum()) and cal.r2 > 0.999
    # the points are MWF = QPM (noise-free): the quadratic is close to the identity in %
    np.testing.assert_allclose(cal.apply(np.array([0.05, 0.2])), [5.0, 20.0], atol=0.1)
    assert len(widget.axes.collections) == 1 and len(widget.axes.lines) == 1
    assert "R²" in widget.cal_text.value
    calibrated = viewer.layers["MWF calibrated here (%) · spgr"]
    assert calibrated.metadata["units"] == "%"
    wm = to_display(d["wm"], affine)
    np.testing.assert_allclose(calibrated.data[wm], 100 * to_display(d["mwf"], affine)[wm], atol=0.2)
    # save, load, and the next fit adds the calibrated MWF layer itself
    widget.cal_file.value = tmp_path / "cal.json"
    widget.save_calibration()
    widget.calibration = None
    widget.load_calibration()
    assert widget.calibration.coefficients == cal.coefficients
    with qtbot.waitSignal(widget.runner.finished, timeout=60000):
        widget.run()
    np.testing.assert_allclose(viewer.layers["MWF from QPM (%) · spgr"].data[wm], calibrated.data[wm], atol=1e-3)


def test_widget_refuses_bad_protocol(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    d = synthetic(shape=(6, 6, 4), model="ernst")
    signals = qpm.spgr_signal(d["pd"], d["t1"], d["fa"], d["tr"])  # no B1 error
    _add(viewer, Volume(signals.astype(np.float32), np.eye(4), metadata={"FlipAngle": [3, 10, 20]}), "spgr")
    widget = QPMWidget(viewer)
    assert widget.run() is None  # no TR
    assert "repetition time is missing" in widget.runner.status.text()
    widget.tr.value = "0.015"
    widget.flip_angles.value = "3 10"
    assert widget.run() is None
    assert "has 3 volumes but 2 flip angles" in widget.runner.status.text()
    widget.flip_angles.value = ""
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()
    assert blocker.args == [True]
    np.testing.assert_allclose(viewer.layers["T1 (s) · spgr"].data, to_display(d["t1"], np.eye(4)), rtol=1e-4)

"""The "Magnetization transfer (MTsat)" dock: a BIDS MTS trio (+ B1) fitted through the thread worker."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_myelin._layers import to_display, volume_to_layer
from napari_myelin.io.volume import Volume
from napari_myelin.reconst.mtsat import fit_mtsat
from napari_myelin.widgets.mtsat import MTsatWidget

from .conftest import oblique_affine
from .test_mtsat import FA, TR, _synthetic_volume, _trio

NAMES = ("sub-01_flip-1_mt-on_MTS", "sub-01_flip-1_mt-off_MTS", "sub-01_flip-2_mt-off_MTS")


def _open_trio(viewer, sig, affine, sidecars=True):
    """Add the three volumes as layers, T1w first (the dock must find the roles by name)."""
    for i in (2, 0, 1):
        meta = {"FlipAngle": float(FA[i]), "RepetitionTimeExcitation": float(TR[i])} if sidecars else {}
        vol = Volume(np.asarray(sig[i], np.float32), affine, metadata=meta)
        viewer.add_layer(Layer.create(*volume_to_layer(vol, name=NAMES[i])))


def test_widget_fits_mtsat_through_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    amp, t1, delta, b = _synthetic_volume((12, 10, 6))
    sig = _trio(amp, t1, delta, b)
    affine = oblique_affine(zooms=(2.0, 2.0, 2.5), angle_deg=0.0, lps=True)  # LPS storage
    _open_trio(viewer, sig, affine)
    viewer.add_layer(Layer.create(*volume_to_layer(Volume(b.astype(np.float32), affine), name="b1")))
    widget = MTsatWidget(viewer)
    assert [w.value.name for w in (widget.mtw, widget.pdw, widget.t1w)] == list(NAMES)
    widget.b1.value = viewer.layers["b1"]
    widget.exact.value = True
    widget.b1_correction.value = 0.0  # every angle B1-scaled, as the signals were made
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()
    assert blocker.args == [True], widget.runner.error
    ref = fit_mtsat(*(np.asarray(s, np.float32) for s in sig), flip_angles=FA, repetition_times=TR,
                    b1=b.astype(np.float32), b1_correction=0.0, exact=True)
    for key, label in (("mtsat", "MTsat (p.u.)"), ("mtr", "MTR (%)"), ("t1", "T1 (s)"), ("a", "amplitude (a.u.)")):
        layer = viewer.layers[f"{label} · {NAMES[0]}"]
        np.testing.assert_allclose(layer.data, to_display(ref[key], affine), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.scale, viewer.layers[NAMES[0]].scale)
        assert layer.metadata["units"] == ref.units[key]
    # the truth the signals were made from
    np.testing.assert_allclose(viewer.layers[f"T1 (s) · {NAMES[0]}"].data, to_display(t1, affine), rtol=1e-5)
    np.testing.assert_allclose(viewer.layers[f"MTsat (p.u.) · {NAMES[0]}"].data, to_display(100 * delta, affine), rtol=1e-4)
    # fitting again replaces the layers instead of adding copies
    n_layers = len(viewer.layers)
    with qtbot.waitSignal(widget.runner.finished, timeout=60000):
        widget.run()
    assert len(viewer.layers) == n_layers


def test_widget_refuses_bad_input_with_one_sentence(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    amp, t1, delta, _ = _synthetic_volume((6, 5, 4))
    sig = _trio(amp, t1, delta)
    _open_trio(viewer, sig, np.eye(4), sidecars=False)
    widget = MTsatWidget(viewer)
    assert widget.run() is None
    assert "has no FlipAngle" in widget.runner.status.text()
    widget.flip_angles.value = "6 6 20"
    assert widget.run() is None
    assert "has no RepetitionTimeExcitation or RepetitionTime" in widget.runner.status.text()
    widget.tr.value = "0.028, 0.028"
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()  # refused by the fit itself, in the worker
    assert blocker.args == [False]
    assert "2 repetition times were given" in widget.runner.status.text()
    widget.pdw.value = widget.mtw.value
    assert widget.run() is None
    assert "three different layers" in widget.runner.status.text()
    widget.pdw.value = viewer.layers[NAMES[1]]
    widget.tr.value = "0.028 0.028 0.018"
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()
    assert blocker.args == [True]
    ref = fit_mtsat(*(np.asarray(s, np.float32) for s in sig), flip_angles=FA, repetition_times=TR)
    np.testing.assert_allclose(viewer.layers[f"MTsat (p.u.) · {NAMES[0]}"].data, to_display(ref["mtsat"], np.eye(4)),
                               rtol=1e-5)

"""The "Susceptibility (QSM)" dock widget through its thread worker (run under xvfb-run -a)."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_myelin._layers import layer_to_volume, volume_to_layer
from napari_myelin.reconst import qsm
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.qsm import QSMWidget

from ._qsm_phantom import make_head


def test_qsm_widget_adds_layers(make_napari_viewer, qtbot):
    h = make_head(shape=(40, 40, 32), voxel_mm=3.0)
    viewer = make_napari_viewer()
    side = {"EchoTime": h.echo_times.tolist(), "MagneticFieldStrength": 3.0}
    for name, arr in (("gre_mag", h.magnitude), ("gre_phase", h.phase)):
        viewer.add_layer(Layer.create(*volume_to_layer(Volume(arr, h.affine, None, dict(side)), name=name)))
    widget = QSMWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.magnitude.setCurrentText("gre_mag")
    widget.phase.setCurrentText("gre_phase")
    assert widget.te.text().split() == [f"{t:g}" for t in h.echo_times]  # from the sidecar
    assert widget.b0.value() == 3.0
    widget.inversion.setCurrentText("tkd")
    widget.bfr.setCurrentText("vsharp")
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run_button.click()
    assert blocker.args == [True]
    names = [ly.name for ly in viewer.layers]
    assert {f"{label} · gre_phase" for label in ("QSM field (Hz)", "QSM local field (ppm)", "chi (ppm)",
                                                 "R2* (1/s)")} <= set(names)
    chi_layer = viewer.layers["chi (ppm) · gre_phase"]
    assert names[-1] == chi_layer.name and viewer.layers.selection.active is chi_layer  # on top, selected
    assert chi_layer.visible and chi_layer.colorbar.visible and chi_layer.colormap.name == "coolwarm"
    assert not viewer.layers["QSM field (Hz) · gre_phase"].visible  # auxiliary maps hidden
    assert chi_layer.metadata["units"] == "ppm"
    chi = layer_to_volume(chi_layer.data, chi_layer.metadata).data
    direct = qsm.fit_qsm(h.magnitude, h.phase, h.echo_times, field_strength=3.0, affine=h.affine,
                         inversion="tkd", bfr="vsharp")
    inside = direct["mask"] > 0
    np.testing.assert_allclose(chi[inside], direct["chi"][inside], atol=1e-5)
    assert np.isnan(chi[~inside]).all()  # transparent outside the mask, not 0
    np.testing.assert_allclose(chi_layer.scale, [3.0, 3.0, 3.0])
    lo, hi = chi_layer.contrast_limits
    assert lo == -hi and hi > 0


def test_qsm_widget_bad_input_notifies(make_napari_viewer, qtbot):
    h = make_head(shape=(24, 24, 20), voxel_mm=4.0, echo_times=(0.005, 0.01, 0.015))
    viewer = make_napari_viewer()
    viewer.add_image(h.magnitude[..., 0], name="mag3d")
    viewer.add_image(h.phase[..., 0], name="phase3d")
    widget = QSMWidget(viewer)
    widget.magnitude.setCurrentText("mag3d")
    widget.phase.setCurrentText("phase3d")
    widget.te.setText("0.005 0.01")
    widget.b0.setValue(3.0)
    with qtbot.waitSignal(widget.runner.finished, timeout=30000) as blocker:
        widget.run_button.click()  # refused before any worker starts
    assert blocker.args == [False]
    assert "echo_times: 2 echo times were given for 1 echoes" in str(widget.runner.error)
    assert [ly.name for ly in viewer.layers] == ["mag3d", "phase3d"]

"""The "χ-separation" dock widget through its thread worker (run under xvfb-run -a)."""

from __future__ import annotations

import numpy as np
import qsm_forward as qf

from napari_myelin._layers import layer_to_volume, volume_to_layer
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.chisep import ChiSepWidget
from napari_myelin.workflows.chisep import chi_separation


def _cylinders():
    """qsm-forward's chi-separation phantom (iron cores in myelin-like shells), 6-echo GRE, R2 15 /s, 2 mm."""
    cp, cn, mask = qf.generate_chisep_phantom([32, 48, 48], para_radii=[3] * 4, dia_radii=[5] * 4)
    field = qf.generate_field(cp + cn, mask=mask > 0, voxel_size=[2, 2, 2], B0_dir=[0, 0, 1])
    te = 0.004 + 0.006 * np.arange(6)
    r2 = np.full(mask.shape, 15.0, np.float32)
    sig = np.stack([qf.generate_signal(field, B0=3, TE=t, R2=r2, dr_pos=137.0, dr_neg=137.0, chi_pos=cp,
                                       chi_neg=cn) for t in te], axis=-1) * (mask > 0)[..., None]
    return np.abs(sig).astype(np.float32), np.angle(sig).astype(np.float32), te, r2, cp


def test_chisep_widget_adds_layers(make_napari_viewer, qtbot):
    mag, phase, te, r2, cp = _cylinders()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    viewer = make_napari_viewer()
    side = {"EchoTime": te.tolist(), "MagneticFieldStrength": 3.0}
    for name, arr in (("gre_mag", mag), ("gre_phase", phase)):
        viewer._add_layer_from_data(*volume_to_layer(Volume(arr, affine, None, dict(side)), name=name))
    # a T2 map (s) as the MWF dock shows its geometric-mean T2: units in the layer's metadata
    data, attrs, kind = volume_to_layer(Volume(1.0 / r2, affine), name="gmT2", metadata={"units": "s"})
    viewer._add_layer_from_data(data, attrs, kind)
    widget = ChiSepWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.magnitude.value = viewer.layers["gre_mag"]
    widget.phase.value = viewer.layers["gre_phase"]
    widget.r2.value = viewer.layers["gmT2"]
    with qtbot.waitSignal(widget.runner.finished, timeout=120000) as blocker:
        widget.run_button.changed.emit(True)
    assert blocker.args == [True]
    names = {ly.name for ly in viewer.layers}
    assert {f"{label} · gre_phase" for label in ("chi_para (ppm)", "chi_dia (ppm)", "R2' (1/s)", "R2* (1/s)",
                                                "chi (ppm)")} <= names
    layer = viewer.layers["chi_para (ppm) · gre_phase"]
    assert layer.metadata["units"] == "ppm"
    para = layer_to_volume(layer.data, layer.metadata).data
    direct = chi_separation(mag, phase, te, r2, field_strength=3.0, affine=affine)
    inside = direct["mask"] > 0
    np.testing.assert_allclose(para[inside], direct["chi_para"][inside], atol=1e-6)
    assert np.isnan(para[~inside]).all()  # transparent outside the mask
    assert para[np.isclose(cp, 0.20)].mean() > 0.15  # the strongest iron core (0.20 ppm)


def test_chisep_widget_bad_input_notifies(make_napari_viewer, qtbot):
    mag, phase, te, r2, _ = _cylinders()
    viewer = make_napari_viewer()
    side = {"EchoTime": te.tolist(), "MagneticFieldStrength": 3.0}
    for name, arr in (("gre_mag", mag), ("gre_phase", phase)):
        viewer._add_layer_from_data(*volume_to_layer(Volume(arr, np.eye(4), None, dict(side)), name=name))
    far = np.eye(4)
    far[0, 3] = 900.0  # another session: no overlap with the GRE
    viewer._add_layer_from_data(*volume_to_layer(Volume(r2, far, None, {"Units": "1/s"}), name="R2 elsewhere"))
    widget = ChiSepWidget(viewer)
    widget.magnitude.value = viewer.layers["gre_mag"]
    widget.phase.value = viewer.layers["gre_phase"]
    widget.r2.value = viewer.layers["R2 elsewhere"]
    assert widget.run() is None  # refused before any worker starts, with a notification
    assert str(widget.runner.error).startswith("R2 elsewhere: its field of view does not overlap")
    assert "does not overlap" in widget.runner.status.text()
    assert len(viewer.layers) == 3

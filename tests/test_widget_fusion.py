"""Dock widget "Integrated myelin map (CNN)" in a real viewer, through the thread worker (run under xvfb-run -a)."""

from __future__ import annotations

import numpy as np
import torch
from napari.layers import Layer

from napari_myelin._layers import layer_to_volume, volume_to_layer
from napari_myelin.utils.errors import InputError
from napari_myelin.fusion.inference import fuse
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.fusion import FusionWidget

from .test_fusion import _subject


def _add(viewer, name, data, affine, units):
    vol = Volume(np.asarray(data, np.float32), affine)
    d, attrs, kind = volume_to_layer(vol, name=name, metadata={"units": units})
    return viewer.add_layer(Layer.create(d, attrs, kind))


def test_widget_fuses_layers_like_the_core(make_napari_viewer, qtbot):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny volume: no thread oversubscription on the shared cores
    try:
        _run_widget(make_napari_viewer, qtbot)
    finally:
        torch.set_num_threads(n)


def _run_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = _subject(5, n=16)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-20.0, -30.0, -10.0]
    # MWF shown in %, as layers do
    _add(viewer, "sub-01 MWF", 100 * s.inputs["mwf"], aff, "%")
    for c, u in (("fa", "fraction"), ("mk", ""), ("qpm", "fraction"), ("qsm", "ppm")):
        _add(viewer, f"sub-01 {c.upper()}", s.inputs[c], aff, u)
    widget = FusionWidget(viewer)
    assert widget.inputs["mwf"].value.name == "sub-01 MWF"
    assert widget.inputs["qsm"].value.name == "sub-01 QSM"
    widget.samples.value = 4
    with qtbot.waitSignal(widget.runner.finished, timeout=120_000) as blocker:
        widget.run()
    assert blocker.args == [True]
    imwf = viewer.layers["integrated MWF (CNN, %) · sub-01 MWF"]
    sd = viewer.layers["integrated MWF uncertainty (SD, %) · sub-01 MWF"]
    assert viewer.layers[-1] is imwf and imwf.visible and not sd.visible and imwf.colorbar.visible
    assert imwf.metadata["units"] == "%" and sd.metadata["units"] == "%"
    np.testing.assert_allclose(imwf.scale, [3.0, 2.0, 2.0])
    out = layer_to_volume(imwf.data, imwf.metadata)
    np.testing.assert_allclose(out.affine, aff)
    ref = fuse(100 * s.inputs["mwf"], s.inputs["fa"], s.inputs["mk"], s.inputs["qpm"], s.inputs["qsm"],
               voxel_size_mm=(2.0, 2.0, 3.0), n_samples=4)
    inside = np.isfinite(s.inputs["fa"]) & (s.inputs["fa"] > 0)
    np.testing.assert_allclose(out.data[inside], ref["imwf"][inside], atol=1e-4)
    assert imwf.metadata["parameters"]["mwf_input_unit"] == "percent"


def test_widget_refuses_layers_on_different_grids(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    s = _subject(6, n=12)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted = aff.copy()
    shifted[0, 3] = 6.0
    _add(viewer, "mwf", s.inputs["mwf"], aff, "fraction")
    _add(viewer, "fa", s.inputs["fa"], shifted, "fraction")
    _add(viewer, "mk", s.inputs["mk"], aff, "")
    _add(viewer, "qpm", s.inputs["qpm"], aff, "fraction")
    widget = FusionWidget(viewer)
    assert widget.run() is None
    assert isinstance(widget.runner.error, InputError)
    assert "affine differs" in str(widget.runner.error)
    assert not any(layer.name.startswith("integrated MWF") for layer in viewer.layers)


def test_widget_passes_mtsat_and_chi_dia_when_chosen(make_napari_viewer, qtbot, tmp_path):
    from napari_myelin.fusion.card import CHANNELS, new_model
    from napari_myelin.fusion.subjects import normalisation_stats
    from napari_myelin.fusion.weights import save_model

    viewer = make_napari_viewer()
    s = _subject(7, n=16, optional=True)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    for c, u in (("mwf", "fraction"), ("fa", "fraction"), ("mk", ""), ("qpm", "fraction"), ("mtsat", "p.u."),
                 ("chi_dia", "ppm")):
        _add(viewer, f"sub-01 {c}", s.inputs[c], aff, u)
    widget = FusionWidget(viewer)
    # chi-separation's chi_dia is preselected as chi_dia, never as the QSM
    assert widget.inputs["qsm"].value is None
    assert widget.inputs["mtsat"].value.name == "sub-01 mtsat"
    assert widget.inputs["chi_dia"].value.name == "sub-01 chi_dia"
    weights = save_model(new_model(CHANNELS, normalisation=normalisation_stats([s], CHANNELS)), tmp_path / "w")
    widget.weights.value = weights
    widget.samples.value = 1
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with qtbot.waitSignal(widget.runner.finished, timeout=120_000) as blocker:
            widget.run()
    finally:
        torch.set_num_threads(n)
    assert blocker.args == [True] and widget.runner.error is None
    imwf = next(layer for layer in viewer.layers if "integrated MWF (CNN" in layer.name)
    out = layer_to_volume(imwf.data, imwf.metadata)
    ref = fuse(s.inputs["mwf"], s.inputs["fa"], s.inputs["mk"], s.inputs["qpm"], mtsat=s.inputs["mtsat"],
               chi_dia=s.inputs["chi_dia"], weights=weights, voxel_size_mm=2.0, n_samples=1)
    np.testing.assert_allclose(out.data[s.mask], ref["imwf"][s.mask], atol=1e-4)
    assert imwf.metadata["parameters"]["channels_present"] == ["chi_dia", "fa", "mk", "mtsat", "mwf", "qpm"]

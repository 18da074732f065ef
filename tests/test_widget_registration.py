"""The "Register to template" dock widget, driven through its thread worker (run under ``xvfb-run -a``)."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels

from napari_myelin._layers import layer_to_volume, volume_to_layer
from napari_myelin.align import atlas
from napari_myelin.align import quality
from napari_myelin.widgets.registration import RegistrationWidget

from .test_registration import make_subject


def _add(viewer, vol, name, kind="image"):
    data, attrs, _ = volume_to_layer(vol, name=name, layer_type=kind)
    return viewer.add_image(data, **attrs) if kind == "image" else viewer.add_labels(data, **attrs)


def test_widget_warps_layers_and_brings_tracts_to_native(make_napari_viewer, qtbot, tmp_path):
    subject = make_subject()
    viewer = make_napari_viewer()
    img = subject["image"]
    _add(viewer, img, "t1w")
    _add(viewer, img.with_data(np.where(img.data > 20, 0.12, 0).astype(np.float32)), "mwf")
    _add(viewer, img.with_data(subject["labels"]), "truth labels", "labels")
    widget = RegistrationWidget(viewer)
    widget.moving.value = viewer.layers["t1w"]
    widget.carry.value = [viewer.layers["mwf"], viewer.layers["truth labels"]]
    widget.preset.value = "affine"
    widget.to_native.value = True
    widget.out_dir.value = tmp_path
    with qtbot.waitSignal(widget.runner.finished, timeout=180_000) as blocker:
        widget.run()
    assert blocker.args == [True], widget.runner.status.text()
    template = atlas.load_template(2)
    warped = layer_to_volume(viewer.layers["t1w (template)"].data, viewer.layers["t1w (template)"].metadata)
    assert warped.shape == template.shape
    np.testing.assert_allclose(warped.affine, template.affine)
    mwf = viewer.layers["mwf (template)"].data
    assert mwf.max() <= 0.12 + 1e-6 and np.median(mwf[mwf > 0]) == np.float32(0.12)
    # carried labels stay labels, with the subject's labels only
    warped_labels = viewer.layers["truth labels (template)"]
    assert isinstance(warped_labels, Labels)
    assert set(np.unique(warped_labels.data)) <= set(np.unique(subject["labels"]))
    # atlas tracts in native space: a Labels layer with names, overlaying the subject layer exactly
    tracts = viewer.layers["t1w tracts (native)"]
    assert isinstance(tracts, Labels)
    np.testing.assert_allclose(tracts.scale, viewer.layers["t1w"].scale)
    np.testing.assert_allclose(tracts.translate, viewer.layers["t1w"].translate)
    assert "name" in tracts.features.columns and len(tracts.features) == len(subject["lut"])
    native = layer_to_volume(tracts.data, tracts.metadata)
    assert quality.mean_label_dice(native.data, subject["labels"]) >= 0.7
    # transforms were saved and a second run reuses them
    assert (tmp_path / "to_template_0GenericAffine.mat").exists()
    with qtbot.waitSignal(widget.runner.finished, timeout=120_000) as blocker:
        widget.run()
    assert blocker.args == [True]
    assert viewer.layers[-1].metadata["transforms"]["forward"][0].startswith(str(tmp_path))


def test_widget_refuses_empty_image(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20, 20), np.float32), name="empty")
    widget = RegistrationWidget(viewer)
    widget.preset.value = "affine"
    assert widget.run() is None
    assert "empty: is empty (every voxel is 0)" in widget.runner.status.text()
    widget.warp.value = False
    viewer.add_image(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), name="noise")
    widget.moving.value = viewer.layers["noise"]
    assert widget.run() is None
    assert "tick" in widget.runner.status.text()
    assert len(viewer.layers) == 2  # nothing added

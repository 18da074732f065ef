"""The "Diffusion kurtosis (DKI)" dock widget: a small DWI fitted through the thread worker."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_myelin._layers import to_display, volume_to_layer
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.dki import DKIWidget

from .conftest import oblique_affine
from .test_dki import dipy_reference, simulated_dwi


def _dwi_layer(data, bvals, bvecs, affine, with_table=True):
    vol = Volume(data.astype(np.float32), affine, bvals=bvals if with_table else None,
                 bvecs=bvecs if with_table else None)
    return Layer.create(*volume_to_layer(vol, name="dwi"))


def test_widget_fits_dwi_layer_through_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, bvals, bvecs = simulated_dwi(shape=(5, 4, 3), snr=40, seed=7)
    # LPS storage with anisotropic voxels: the widget must fit in stored voxel order
    affine = oblique_affine(zooms=(2.0, 2.0, 2.5), angle_deg=0.0, lps=True)
    viewer.add_layer(_dwi_layer(data, bvals, bvecs, affine))
    mask = np.ones(data.shape[:3], np.uint8)
    mask[0, 0, 0] = 0
    dwi = viewer.layers["dwi"]
    # a mask drawn in napari on the DWI's grid (no stored affine, the DWI's scale and translate)
    viewer.add_labels(to_display(mask, affine), name="mask", scale=dwi.scale[1:], translate=dwi.translate[1:])
    widget = DKIWidget(viewer)
    widget.mask.value = viewer.layers["mask"]
    assert widget.dwi.value is viewer.layers["dwi"]
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()
    assert blocker.args == [True]
    ref = dipy_reference(data.astype(np.float32).astype(float), bvals, bvecs, mask.astype(bool))
    inside = to_display(mask, affine) > 0
    for key, label, tol in (("fa", "FA", 1e-6), ("mk", "MK", 1e-4), ("ak", "AK", 1e-4), ("rk", "RK", 1e-4)):
        layer = viewer.layers[f"{label} · dwi"]
        np.testing.assert_allclose(layer.data[inside], to_display(ref[key], affine)[inside], atol=tol)
        assert np.isnan(layer.data[~inside]).all()  # transparent outside the mask
        assert layer.colorbar.visible and layer.visible == (key == "mk")
        np.testing.assert_allclose(layer.scale, dwi.scale[1:])
        np.testing.assert_allclose(layer.translate, dwi.translate[1:])
    md = viewer.layers["MD (mm^2/s) · dwi"]
    np.testing.assert_allclose(md.data[inside], to_display(ref["md"], affine)[inside], rtol=1e-5, atol=1e-10)
    # contrast limits: the 1st and 99th percentiles inside the mask
    np.testing.assert_allclose(md.contrast_limits, np.percentile(md.data[inside], [1, 99]), rtol=1e-5)
    assert md.metadata["units"] == "mm^2/s"
    assert viewer.layers["MK · dwi"].metadata["units"] == "dimensionless"
    assert viewer.layers[-1].name == "MK · dwi" and viewer.layers.selection.active.name == "MK · dwi"
    rgb = viewer.layers["colour FA · dwi"]
    assert rgb.rgb and rgb.data.shape == to_display(mask, affine).shape + (3,)
    # colour = |principal direction in world axes| * FA, so its length is FA
    np.testing.assert_allclose(np.linalg.norm(rgb.data, axis=-1), to_display(ref["fa"], affine), atol=1e-5)


def test_widget_refuses_dwi_without_table_then_uses_chosen_files(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    data, bvals, bvecs = simulated_dwi(shape=(3, 2, 2), seed=4)
    viewer.add_layer(_dwi_layer(data, bvals, bvecs, np.eye(4), with_table=False))
    widget = DKIWidget(viewer)
    assert widget.run() is None
    assert "carries no b-values" in str(widget.runner.error)
    assert len(viewer.layers) == 1
    np.savetxt(tmp_path / "dwi.bval", bvals[None], fmt="%g")
    np.savetxt(tmp_path / "dwi.bvec", bvecs.T, fmt="%.10f")
    widget.bval.value = tmp_path / "dwi.bval"
    widget.bvec.value = tmp_path / "dwi.bvec"
    widget.method.value = "OLS"
    mask = np.ones(data.shape[:3], bool)
    mask_layer = Layer.create(*volume_to_layer(Volume(mask.astype(np.uint8), np.eye(4)), name="brain", layer_type="labels"))
    viewer.add_layer(mask_layer)
    widget.mask.value = mask_layer
    with qtbot.waitSignal(widget.runner.finished, timeout=60000) as blocker:
        widget.run()
    assert blocker.args == [True]
    ref = dipy_reference(data.astype(np.float32).astype(float), bvals, np.loadtxt(tmp_path / "dwi.bvec").T, mask, "OLS")
    np.testing.assert_allclose(viewer.layers["FA · dwi"].data, to_display(ref["fa"], np.eye(4)), atol=1e-6)
    np.testing.assert_allclose(viewer.layers["MK · dwi"].data, to_display(ref["mk"], np.eye(4)), atol=1e-4)

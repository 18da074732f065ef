"""The "Myelin water (MWF)" dock widget: a small multi-echo series fitted through the thread worker."""

from __future__ import annotations

import numpy as np
from napari.layers import Layer

from napari_myelin._layers import to_display, volume_to_layer
from napari_myelin.reconst import mwf
from napari_myelin.reconst.epg import epg_decay_curve
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.mwf import MWFWidget

from .conftest import oblique_affine


def _series(shape=(6, 5, 3), n=32, te=0.01, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.3, shape)
    alpha = rng.uniform(140.0, 170.0, shape)  # away from the flat residual near 180 deg
    sig = 800.0 * (f[..., None] * epg_decay_curve(n, te, 0.02, 1.0, alpha)
                   + (1 - f[..., None]) * epg_decay_curve(n, te, 0.08, 1.0, alpha))
    return sig, f, alpha


def test_widget_fits_through_worker_and_plots_a_voxel(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    sig, f, alpha = _series()
    sig[0, 0, 0] = np.nan  # skipped, reported
    affine = oblique_affine(zooms=(2.0, 2.0, 3.0), angle_deg=0.0, lps=True)
    te = [0.01 * (i + 1) for i in range(32)]
    vol = Volume(sig.astype(np.float32), affine, metadata={"EchoTime": te})
    viewer.add_layer(Layer.create(*volume_to_layer(vol, name="me")))
    mask = np.ones(f.shape, np.uint8)
    viewer.add_layer(Layer.create(*volume_to_layer(Volume(mask, affine), name="mask", layer_type="labels")))
    widget = MWFWidget(viewer)
    assert widget.series.value is viewer.layers["me"]
    assert float(widget.te.value) == 10.0  # prefilled from the sidecar
    widget.mask.value = viewer.layers["mask"]
    widget.reg.value = "none"
    with qtbot.waitSignal(widget.runner.finished, timeout=120000) as blocker:
        widget.run()
    assert blocker.args == [True]
    mwf_layer = viewer.layers["MWF (%) · me"]
    assert mwf_layer.metadata["units"] == "%"
    np.testing.assert_allclose(mwf_layer.scale, viewer.layers["me"].scale[1:])
    expected = to_display(100 * f, affine)
    got = np.asarray(mwf_layer.data)
    ok = np.isfinite(got)
    assert ok.sum() == f.size - 1
    np.testing.assert_allclose(got[ok], expected[ok], atol=1.0)
    # every layer equals the core entry point run directly (same grid, same numbers)
    ref = mwf.myelin_water(sig.astype(np.float32), te, reg="none", mask=mask > 0)
    for key, label in (("alpha", "refocusing angle (deg)"), ("gmt2", "geometric-mean T2 (s)"), ("snr", "SNR"),
                       ("iewf", "IEWF (%)")):
        scale = 100.0 if key == "iewf" else 1.0
        np.testing.assert_allclose(np.asarray(viewer.layers[f"{label} · me"].data),
                                   to_display(scale * ref[key], affine).astype(np.float32), rtol=1e-5)
    # the optimised refocusing angle is near the truth where the residual is not flat (below 170 deg;
    # noise-free decays near 180 deg fit almost equally well at any angle close to 180)
    true_alpha = to_display(alpha, affine)
    sharp = ok & (true_alpha < 170.0)
    assert sharp.sum() >= 10
    assert np.max(np.abs(np.asarray(viewer.layers["refocusing angle (deg) · me"].data)[sharp] - true_alpha[sharp])) < 1.0
    assert viewer.layers["geometric-mean T2 (s) · me"].metadata["units"] == "s"
    assert "1 skipped" in widget.info.value
    # clicking a voxel: distribution and measured vs fitted decay
    z, y, x = 1, 2, 3
    assert widget.show_voxel((z, y, x))
    measured = np.asarray(viewer.layers["me"].data)[:, z, y, x]
    np.testing.assert_allclose(widget.fitted_decay, measured, rtol=1e-2)  # discrete T2 grid
    np.testing.assert_allclose(widget.voxel_mwf, expected[z, y, x], atol=1.0)
    assert len(widget.ax_dist.lines) == 1 and len(widget.ax_decay.lines) == 2
    # the title names the voxel in world mm (RAS x, y, z, as the status bar), the decay axes have units
    world = viewer.layers["me"].data_to_world((0, z, y, x))[-3:][::-1]
    assert widget.ax_dist.get_title().startswith("voxel at ({:.1f}, {:.1f}, {:.1f}) mm".format(*world))
    assert widget.ax_decay.get_xlabel() == "echo time TE (ms)" and widget.ax_decay.get_ylabel() == "signal (a.u.)"
    # the MWF map on top and selected, the auxiliary maps hidden, a colorbar on every map
    assert viewer.layers[-1] is mwf_layer and viewer.layers.selection.active is mwf_layer and mwf_layer.visible
    assert not viewer.layers["SNR · me"].visible
    assert all(viewer.layers[f"{label} · me"].colorbar.visible for label in ("MWF (%)", "IEWF (%)", "SNR"))


def test_widget_refuses_bad_spacing(make_napari_viewer):
    viewer = make_napari_viewer()
    sig, _, _ = _series(shape=(3, 3, 2))
    viewer.add_layer(Layer.create(*volume_to_layer(Volume(sig.astype(np.float32), np.eye(4)), name="me")))
    widget = MWFWidget(viewer)
    widget.te.value = "abc"
    assert widget.run() is None
    assert "not a number" in widget.runner.status.text()
    assert "MWF (%) · me" not in viewer.layers

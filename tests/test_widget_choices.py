"""Defaults by meaning and maps that explain themselves, in a real viewer (run under xvfb-run -a).

The docks pick their inputs from the layers' metadata (never a truth layer, never B1 as an MWF map, the GRE
magnitude and not the MESE for QSM, an open B1 map for QPM/MTsat), keep the user's choices when layers change,
refuse a layer of the wrong kind with one sentence, and add maps with units, colorbars, robust contrast, NaN
outside the mask, the primary map on top and one grouped notification. The QSM dock passes its "Phase sign".
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Layer

from napari_myelin._layers import layer_to_volume, volume_to_layer
from napari_myelin._sample_data import phantom_layers
from napari_myelin.io.volume import Volume
from napari_myelin.reconst.qsm import fit_qsm
from napari_myelin.widgets import _display, qsm as qsm_dock
from napari_myelin.widgets._choices import best, is_truth, layer_kind
from napari_myelin.widgets.chisep import ChiSepWidget
from napari_myelin.widgets.dki import DKIWidget
from napari_myelin.widgets.fusion import FusionWidget
from napari_myelin.widgets.mtsat import MTsatWidget
from napari_myelin.widgets.mwf import MWFWidget
from napari_myelin.widgets.qpm import QPMWidget
from napari_myelin.widgets.qsm import QSMWidget

from ._qsm_phantom import make_head
from .conftest import oblique_affine


def _phantom_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    for data, attrs, kind in phantom_layers("small"):
        viewer.add_layer(Layer.create(data, attrs, kind))
    return viewer


def test_layer_kinds_from_metadata(make_napari_viewer):
    viewer = _phantom_viewer(make_napari_viewer)
    kinds = {layer.name: layer_kind(layer) for layer in viewer.layers}
    assert kinds["phantom MESE"] == "mese" and kinds["phantom DWI"] == "dwi" and kinds["phantom SPGR"] == "spgr"
    assert kinds["phantom GRE magnitude"] == "gre_magnitude" and kinds["phantom GRE phase"] == "gre_phase"
    assert kinds["phantom B1"] == "b1" and kinds["truth MWF (%)"] == "mwf" and kinds["truth chi (ppm)"] == "chi"
    assert [layer.name for layer in viewer.layers if is_truth(layer)] == [
        "truth MWF (%)", "truth FA", "truth MD", "truth MK", "truth chi (ppm)", "truth T1 (s)", "truth tracts"]
    assert best(list(viewer.layers), "mwf") is None  # only the truth is an MWF map: no default
    assert best(list(viewer.layers), "b1", optional=True) is viewer.layers["phantom B1"]


def test_docks_default_by_meaning_on_the_phantom(make_napari_viewer):
    viewer = _phantom_viewer(make_napari_viewer)
    qsm = QSMWidget(viewer)
    assert (qsm.magnitude.currentText(), qsm.phase.currentText()) == ("phantom GRE magnitude", "phantom GRE phase")
    qpm = QPMWidget(viewer)
    assert qpm.spgr.value is viewer.layers["phantom SPGR"]
    assert qpm.b1.value is viewer.layers["phantom B1"]  # an open B1 map is used
    assert qpm.cal_mwf.value is None  # never the B1 map, never the truth
    fusion = FusionWidget(viewer)
    assert all(box.value is None for box in fusion.inputs.values())  # the truth maps are not inputs
    assert MWFWidget(viewer).series.value is viewer.layers["phantom MESE"]
    assert DKIWidget(viewer).dwi.value is viewer.layers["phantom DWI"]
    chisep = ChiSepWidget(viewer)
    assert chisep.magnitude.value is viewer.layers["phantom GRE magnitude"]
    assert chisep.phase.value is viewer.layers["phantom GRE phase"]
    assert chisep.r2.value is viewer.layers["phantom MESE"]
    assert MTsatWidget(viewer).b1.value is viewer.layers["phantom B1"]


def test_user_choices_survive_layer_changes(make_napari_viewer):
    viewer = _phantom_viewer(make_napari_viewer)
    fusion = FusionWidget(viewer)
    qsm = QSMWidget(viewer)
    qpm = QPMWidget(viewer)
    fusion.inputs["mwf"].value = viewer.layers["truth MWF (%)"]  # the user may choose the truth
    fusion.inputs["fa"].value = viewer.layers["truth FA"]
    qsm.magnitude.setCurrentText("phantom SPGR")
    qpm.b1.value = None
    # a new MWF map and a new FA map appear: the choices stay
    for key, name in (("mwf", "MWF (%) · phantom MESE"), ("fa", "FA · phantom DWI")):
        vol = Volume(np.zeros((4, 4, 3), np.float32), np.eye(4))
        viewer.add_layer(Layer.create(*volume_to_layer(vol, name=name, metadata={"map": key, "units": ""})))
    assert fusion.inputs["mwf"].value is viewer.layers["truth MWF (%)"]
    assert fusion.inputs["fa"].value is viewer.layers["truth FA"]
    assert fusion.inputs["mk"].value is None
    assert qsm.magnitude.currentText() == "phantom SPGR" and qpm.b1.value is None
    assert qpm.cal_mwf.value is viewer.layers["MWF (%) · phantom MESE"]  # filled in once an MWF map is open
    # the chosen layer goes: back to the default by meaning
    viewer.layers.remove("truth MWF (%)")
    assert fusion.inputs["mwf"].value is viewer.layers["MWF (%) · phantom MESE"]
    viewer.layers.remove("phantom SPGR")
    assert qsm.magnitude.currentText() == "phantom GRE magnitude"


def test_wrong_kind_refused_with_one_sentence(make_napari_viewer, qtbot):
    viewer = _phantom_viewer(make_napari_viewer)
    qpm = QPMWidget(viewer)
    qpm.cal_mwf.value = viewer.layers["phantom B1"]
    qpm.cal_qpm.value = viewer.layers["truth T1 (s)"]
    assert qpm.calibrate() is None
    assert str(qpm.runner.error) == ("phantom B1: its metadata says it is a B1 map (ratio); choose an MWF map (%) "
                                     "for 'MWF map'.")
    qsm = QSMWidget(viewer)
    qsm.magnitude.setCurrentText("phantom MESE")
    with qtbot.waitSignal(qsm.runner.finished, timeout=30000) as blocker:
        qsm.run_button.click()
    assert blocker.args == [False]
    assert str(qsm.runner.error) == ("phantom MESE: its metadata says it is a multi-echo spin-echo series; choose "
                                     "the multi-echo GRE magnitude for 'Magnitude'.")
    mwf = MWFWidget(viewer)
    mwf.series.value = viewer.layers["phantom DWI"]
    assert mwf.run() is None and "choose the multi-echo spin-echo series" in str(mwf.runner.error)


@pytest.fixture(scope="module")
def head():
    return make_head(shape=(40, 40, 32), voxel_mm=3.0)


def _qsm_viewer(make_napari_viewer, head, phase):
    viewer = make_napari_viewer()
    side = {"EchoTime": head.echo_times.tolist(), "MagneticFieldStrength": 3.0}
    for name, arr, units in (("GRE magnitude", head.magnitude, "a.u."), ("GRE phase", phase, "rad")):
        vol = Volume(arr, head.affine, None, {**side, "Units": units})
        viewer.add_layer(Layer.create(*volume_to_layer(vol, name=name)))
    widget = QSMWidget(viewer)
    widget.inversion.setCurrentText("tkd")
    widget.bfr.setCurrentText("lbv")
    return viewer, widget


def test_qsm_phase_sign_option(make_napari_viewer, qtbot, head, monkeypatch):
    said = []
    monkeypatch.setattr(qsm_dock, "show_warning", said.append)
    viewer, widget = _qsm_viewer(make_napari_viewer, head, -head.phase)  # the other vendor convention
    assert widget.phase_sign.currentText() == "+1"
    with qtbot.waitSignal(widget.runner.finished, timeout=120000) as blocker:
        widget.run_button.click()
    assert blocker.args == [True]
    assert said == [widget.phase_sign_warning]
    assert "set 'Phase sign' to -1" in said[0] and "--phase-sign -1" in said[0]
    widget.phase_sign.setCurrentText("-1")
    with qtbot.waitSignal(widget.runner.finished, timeout=120000) as blocker:
        widget.run_button.click()
    assert blocker.args == [True] and widget.phase_sign_warning is None and len(said) == 1
    chi = viewer.layers["chi (ppm) · GRE phase"]
    assert chi.metadata["parameters"]["PhaseSign"] == -1
    right = fit_qsm(head.magnitude, head.phase, head.echo_times, field_strength=3.0, affine=head.affine,
                    inversion="tkd", bfr="lbv")
    inside = right["mask"] > 0
    np.testing.assert_allclose(layer_to_volume(chi.data, chi.metadata).data[inside], right["chi"][inside], atol=1e-6)


def test_maps_explain_themselves_with_one_notification(make_napari_viewer, monkeypatch):
    said = []
    monkeypatch.setattr(_display, "show_warning", said.append)
    viewer = make_napari_viewer()
    vol = Volume(np.zeros((6, 5, 4), np.float32), oblique_affine(angle_deg=10.0))
    rng = np.random.default_rng(1)
    maps = {"snr": rng.uniform(10, 300, vol.shape), "mk": rng.uniform(-0.4, 7.9, vol.shape),
            "chi": rng.normal(0.0, 0.05, vol.shape)}
    mask = np.ones(vol.shape, bool)
    mask[0] = False
    layers = _display.add_maps(viewer, vol, maps, primary="mk", source="dwi", units={"snr": "", "mk": ""},
                               mask=mask, action="DKI fit")
    assert [layer.name for layer in viewer.layers] == ["SNR · dwi", "chi (ppm) · dwi", "MK · dwi"]
    assert viewer.layers.selection.active is layers["mk"] and layers["mk"].visible
    assert not layers["snr"].visible and not layers["chi"].visible  # auxiliary maps hidden
    assert all(layer.colorbar.visible for layer in layers.values())
    lo, hi = layers["mk"].contrast_limits
    np.testing.assert_allclose((lo, hi), np.percentile(maps["mk"][mask], [1, 99]), rtol=1e-5)
    lo, hi = layers["chi"].contrast_limits
    assert layers["chi"].colormap.name == "coolwarm" and lo == -hi  # diverging, centred at 0
    assert np.isnan(layer_to_volume(layers["mk"].data, layers["mk"].metadata).data[~mask]).all()
    assert len(said) == 1 and said[0].startswith("DKI fit: the maps (SNR · dwi, chi (ppm) · dwi, MK · dwi) are "
                                                 "oblique by 10.0 deg")

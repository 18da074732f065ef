"""The "Myelin workspace" dock: every dock in a tab, the window still fits 1280 x 800 and gets its minimum size
back when the workspace is closed; the ROI table shows mean and SD without horizontal scrolling. Run under
``xvfb-run -a``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.layers import Layer
from qtpy.QtWidgets import QApplication, QScrollArea

from napari_myelin._layers import volume_to_layer
from napari_myelin.io.volume import Volume
from napari_myelin.widgets.workspace import DOCKS, MyelinWorkspace


def _size(hint) -> tuple[int, int]:
    return hint.width(), hint.height()


def test_workspace_fits_1280x800_and_restores_the_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    app = QApplication.instance()
    first = viewer.window.add_dock_widget(MyelinWorkspace(viewer), name="Myelin workspace", area="right")
    window = first.window()  # the napari main window (Qt's own accessor)
    viewer.window.remove_dock_widget(first)
    app.processEvents()
    before = _size(window.minimumSizeHint())

    workspace = MyelinWorkspace(viewer)
    dock = viewer.window.add_dock_widget(workspace, name="Myelin workspace", area="right")
    for title, _ in DOCKS:  # every dock created, as after a session that used them all
        workspace.dock(title)
        app.processEvents()
    assert set(workspace.docks) == {title for title, _ in DOCKS}
    assert all(isinstance(workspace.tabs.widget(i), QScrollArea) for i in range(workspace.tabs.count()))
    width, height = _size(window.minimumSizeHint())
    print(f"\nminimum size: {before} without the workspace, {(width, height)} with all {len(DOCKS)} docks open")
    assert height <= 800 and width <= 1280
    window.resize(1280, 800)
    app.processEvents()
    assert window.height() <= 800 and window.width() <= 1280

    viewer.window.remove_dock_widget(dock)
    app.processEvents()
    assert _size(window.minimumSizeHint()) == before


def test_roi_table_shows_mean_and_sd_without_scrolling(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 800)
    rng = np.random.default_rng(3)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (20, 18, 12)
    for name, units in (("sub-01 MWF (%) with a long name", "%"), ("sub-01 FA", "fraction")):
        data, attrs, kind = volume_to_layer(Volume(rng.random(shape).astype(np.float32), aff), name=name,
                                            metadata={"units": units})
        viewer.add_layer(Layer.create(data, attrs, kind))
    lut = pd.DataFrame({"index": [1, 2], "name": ["Superior longitudinal fasciculus III left",
                                                  "Corpus callosum body (posterior part)"]})
    labels = np.zeros(shape, np.int32)
    labels[2:9, 2:9, 2:9], labels[10:18, 2:9, 2:9] = 1, 2
    viewer.add_labels(labels, name="tracts", scale=(2, 2, 2), features=lut, metadata={"lut": lut.to_dict("list")})
    workspace = MyelinWorkspace(viewer)
    viewer.window.add_dock_widget(workspace, name="Myelin workspace", area="right")
    stats = workspace.dock("ROI stats")
    stats.maps.value = [viewer.layers["sub-01 MWF (%) with a long name"], viewer.layers["sub-01 FA"]]
    stats.labels.value = viewer.layers["tracts"]
    with qtbot.waitSignal(stats.runner.finished, timeout=60_000) as blocker:
        stats.compute()
    assert blocker.args == [True], stats.runner.error
    QApplication.instance().processEvents()
    table = stats.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    visible = table.viewport().width()
    for column in ("mean", "sd"):
        c = headers.index(column)
        right = table.columnViewportPosition(c) + table.columnWidth(c)
        assert table.horizontalScrollBar().value() == 0 and right <= visible, (column, right, visible)
    long_name = next(r for r in range(table.rowCount()) if table.item(r, headers.index("name")).text().startswith("Sup"))
    assert table.item(long_name, headers.index("name")).toolTip().startswith("Superior longitudinal")


def test_workspace_hosts_every_dock_of_the_manifest():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-myelin")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    docks = {commands[w.command] for w in manifest.contributions.widgets}
    hosted = {path for _, path in DOCKS}
    assert docks - hosted == {"napari_myelin.widgets.workspace:MyelinWorkspace"}
    assert hosted <= docks

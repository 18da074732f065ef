"""Dock widget "Myelin workspace": every napari-myelin dock in one tabbed area that fits a 1280 x 800 screen.

Opened one by one, the docks stack in napari's right-hand column and their minimum heights add up: with
four of them the window could not be made smaller than three screens. The workspace hosts each dock in a
tab of a :class:`~qtpy.QtWidgets.QTabWidget`, inside a :class:`~qtpy.QtWidgets.QScrollArea`, so the
workspace asks for a small minimum size whatever the docks need (they scroll instead), and closing it
gives the window its previous minimum size back. A dock is created the first time its tab is shown, so
opening the workspace costs one dock, not twelve.

:func:`fit_columns` sizes a table's columns to their contents with a cap, so that long names (tract
names) are elided (full text in the tooltip) and the numbers (mean, SD) stay in view without
horizontal scrolling.
"""

from __future__ import annotations

import importlib

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QFrame, QScrollArea, QTabWidget, QTableWidget, QVBoxLayout, QWidget

#: (tab title, "module:class") of the docks hosted by the workspace, in tab order.
DOCKS = (
    ("Pipeline", "napari_myelin.widgets.pipeline:PipelineWidget"),
    ("MWF", "napari_myelin.widgets.mwf:MWFWidget"),
    ("DKI", "napari_myelin.widgets.dki:DKIWidget"),
    ("QSM", "napari_myelin.widgets.qsm:QSMWidget"),
    ("χ-sep", "napari_myelin.widgets.chisep:ChiSepWidget"),
    ("QPM", "napari_myelin.widgets.qpm:QPMWidget"),
    ("MTsat", "napari_myelin.widgets.mtsat:MTsatWidget"),
    ("Register", "napari_myelin.widgets.registration:RegistrationWidget"),
    ("Fusion", "napari_myelin.widgets.fusion:FusionWidget"),
    ("ROI stats", "napari_myelin.widgets.stats:RoiStatsWidget"),
    ("Abnormality", "napari_myelin.widgets.abnormality:AbnormalityWidget"),
    ("Cohort", "napari_myelin.widgets.cohort:CohortWidget"),
)
#: Minimum size (px) the workspace asks for: the docks scroll inside it.
MIN_WIDTH, MIN_HEIGHT = 360, 240
#: Widest a table column is made by :func:`fit_columns` (px); longer text is elided.
MAX_COLUMN_WIDTH = 150


def fit_columns(table: QTableWidget, max_width: int = MAX_COLUMN_WIDTH) -> None:
    """Size the columns of ``table`` to their contents, none wider than ``max_width`` (text elided, the full
    text in each item's tooltip), and scroll per pixel."""
    table.resizeColumnsToContents()
    header = table.horizontalHeader()
    for column in range(table.columnCount()):
        if header.sectionSize(column) > max_width:
            header.resizeSection(column, max_width)
            for row in range(table.rowCount()):
                item = table.item(row, column)
                if item is not None and not item.toolTip():
                    item.setToolTip(item.text())
    table.setTextElideMode(Qt.TextElideMode.ElideRight)
    table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


class MyelinWorkspace(QWidget):
    """All the napari-myelin docks in tabs, each scrollable; a dock is created when its tab is first shown.

    Attributes
    ----------
    tabs : QTabWidget
        One tab per entry of :data:`DOCKS`.
    docks : dict of str to QWidget
        The docks created so far, by tab title.
    """

    def __init__(self, napari_viewer, docks=DOCKS) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._specs = dict(docks)
        self.docks: dict[str, QWidget] = {}
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setDocumentMode(True)
        for title in self._specs:
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            self.tabs.addTab(area, title)
        self.tabs.currentChanged.connect(self._show_tab)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMinimumSize(MIN_WIDTH, MIN_HEIGHT)
        self._show_tab(self.tabs.currentIndex())

    def minimumSizeHint(self):  # noqa: D102 - the docks scroll: their own minimum does not count
        return self.minimumSize()

    def dock(self, title: str) -> QWidget:
        """The dock of tab ``title`` (created now if needed), its tab made current."""
        index = list(self._specs).index(title)
        self.tabs.setCurrentIndex(index)
        self._show_tab(index)
        return self.docks[title]

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Disconnect the docks from the viewer's layer events before they go."""
        for dock in self.docks.values():
            for group in (self.viewer.layers.events, self.viewer.layers.selection.events):
                for emitter in group.emitters.values():
                    emitter.disconnect(dock)
        super().closeEvent(event)

    def _show_tab(self, index: int) -> None:
        if index < 0:
            return
        title = self.tabs.tabText(index)
        if title in self.docks:
            return
        dock = _load(self._specs[title])(self.viewer)
        self.docks[title] = dock
        self.tabs.widget(index).setWidget(dock)

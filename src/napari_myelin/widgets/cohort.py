"""Dock widget "Cohort": run :func:`napari_myelin.workflows.cohort.run_cohort` on a BIDS root (an
embedded Dask cluster, or attached to a running scheduler), follow every subject live, open a finished
subject's maps as layers and the group table."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit, PushButton, SpinBox
from napari.layers import Image, Layer
from qtpy.QtCore import QAbstractTableModel, QObject, Qt, Signal
from qtpy.QtWidgets import QLabel, QTableView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from .._layers import collect_warnings
from .._reader import read_results
from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.cohort import run_cohort
from napari_myelin.workflows.cohort_cluster import PRESETS
from napari_myelin.workflows.pipeline import STEPS
from ._display import notify_warnings
from ._runner import Runner

#: Columns of the per-subject table.
COLUMNS = ("subject", "status", "steps", "seconds", "message")


class _Relay(QObject):
    """Carries news from the cohort's thread to the GUI thread."""

    stepped = Signal(str, str, str, float, str)
    reported = Signal(str)


@dataclass
class _Row:
    """A subject's row in the table: its index, steps ended, seconds of work (s) and whether a step failed."""

    index: int
    ended: int = 0
    seconds: float = 0.0
    failed: bool = False


class _FrameModel(QAbstractTableModel):
    """A read-only Qt model over a DataFrame (rows are drawn on demand, so large tables stay fast)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        super().__init__()
        self.frame = frame

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.frame)

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.frame.columns)

    def data(self, index, role=Qt.DisplayRole):
        if role != Qt.DisplayRole or not index.isValid():
            return None
        value = self.frame.iat[index.row(), index.column()]
        return "" if pd.isna(value) else str(value)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role != Qt.DisplayRole:
            return None
        return str(self.frame.columns[section]) if orientation == Qt.Horizontal else str(section + 1)


class CohortWidget(QWidget):
    """Choose a BIDS root and an output folder, press Start; the table follows each subject."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.bids = FileEdit(label="BIDS root", mode="d")
        self.out = FileEdit(label="output folder", mode="d")
        self.workers = SpinBox(label="workers", value=max(1, os.cpu_count() or 1), min=1, max=1024)
        self.threads = SpinBox(label="threads per worker", value=1, min=1, max=256)
        self.scheduler = LineEdit(label="attach to scheduler", value="")
        self.scheduler.tooltip = "empty: an embedded cluster on this machine; or tcp://HOST:8786 of a running scheduler"
        self.preset = ComboBox(label="registration", choices=list(PRESETS), value="fast")
        self.force = CheckBox(text="redo finished steps", value=False)
        self.start_button = PushButton(text="Start")
        self.start_button.changed.connect(self.start)
        self.form = Container(widgets=[self.bids, self.out, self.workers, self.threads, self.scheduler, self.preset,
                                       self.force, self.start_button])
        self.runner = Runner()
        self.news = QLabel("")
        self.news.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.open_subject_button = PushButton(text="Open subject's maps")
        self.open_subject_button.changed.connect(self.open_subject)
        self.open_group_button = PushButton(text="Open group table")
        self.open_group_button.changed.connect(self.open_group_table)
        layout = QVBoxLayout(self)
        for widget in (self.form.native, self.runner, self.news, self.table, self.open_subject_button.native,
                       self.open_group_button.native):
            layout.addWidget(widget)
        self._relay = _Relay()
        self._relay.stepped.connect(self._on_step)
        self._relay.reported.connect(self._on_report)
        self._rows: dict[str, _Row] = {}
        self.result = None

    def start(self, _value=None):
        """Start the cohort in a thread worker (returns it, or ``None`` when input is refused)."""
        bids, out = str(self.bids.value), str(self.out.value)
        if bids in ("", ".") or out in ("", "."):
            self.runner.refuse(InputError("Cohort: choose a BIDS root and an output folder."))
            return None
        self._rows.clear()
        self.table.setRowCount(0)
        self.news.setText("")
        self.result = None
        options = {"preset": self.preset.value, "force": self.force.value,
                   "threads_per_worker": int(self.threads.value), "workers": int(self.workers.value)}
        if self.scheduler.value.strip():
            options["scheduler"] = self.scheduler.value.strip()
        return self.runner.start(run_cohort, self._done, bids_root=bids, out=out,
                                 on_status=lambda sub, step, r: self._relay.stepped.emit(sub, step, r.status,
                                                                                        r.seconds, r.message),
                                 report=self._relay.reported.emit, **options)

    def _row(self, subject: str) -> _Row:
        """The table row of a subject, added on its first news."""
        if subject not in self._rows:
            self._rows[subject] = _Row(self.table.rowCount())
            self.table.insertRow(self.table.rowCount())
            self.table.setItem(self._rows[subject].index, 0, QTableWidgetItem(subject))
        return self._rows[subject]

    def _show(self, subject: str, status: str, message: str) -> None:
        row = self._row(subject)
        for col, text in ((1, status), (2, f"{row.ended}/{len(STEPS)}"), (3, f"{row.seconds:.1f}"), (4, message)):
            self.table.setItem(row.index, col, QTableWidgetItem(text))

    def _on_step(self, subject: str, step: str, status: str, seconds: float, message: str) -> None:
        row = self._row(subject)
        row.ended = len(STEPS) if step == "inputs" else row.ended + 1
        row.seconds += seconds
        row.failed = row.failed or status in ("failed", "blocked")
        state = "failed" if row.failed else ("running" if row.ended < len(STEPS) else "succeeded")
        self._show(subject, state, message if status == "failed" else f"{step} {status}")

    def _on_report(self, line: str) -> None:
        self.news.setText("\n".join(filter(None, (self.news.text(), line))))

    def _done(self, result) -> None:
        self.result = result
        for sub, st in result.subjects.items():
            row = self._row(sub)
            row.ended, row.seconds = len(STEPS), st.seconds
            self._show(sub, st.status, st.message)
        self._on_report(f"{len(result.subjects) - len(result.failed)} of {len(result.subjects)} subjects succeeded; "
                        f"status in {result.status_tsv}")

    def _selected_subject(self) -> str:
        rows = {i.row() for i in self.table.selectedIndexes()}
        if self.result is None or len(rows) != 1:
            raise InputError("Cohort: select one subject of a finished cohort in the table.")
        return self.table.item(rows.pop(), 0).text()

    def open_subject(self, _value=None) -> list:
        """Add the selected subject's native-space maps and tract labels as layers (returns them)."""
        try:
            subject = self._selected_subject()
        except InputError as exc:
            self.runner.refuse(exc)
            return []
        with collect_warnings() as messages:  # one notification for the whole subject (e.g. oblique maps)
            layers = [Layer.create(data, attrs, kind)
                      for data, attrs, kind in read_results(self.result.out_dir / subject)]
        for layer in layers:
            self.viewer.add_layer(layer)
            if isinstance(layer, Image):
                layer.colorbar.visible = True  # napari's colorbar overlay; units are in the name
        notify_warnings(f"Cohort: {subject}", messages)
        return layers

    def open_group_table(self, _value=None) -> QTableView | None:
        """Show ``group/tracts_long.csv`` of the finished cohort in a dock (returns its view)."""
        path = None if self.result is None else self.result.out_dir / "group" / "tracts_long.csv"
        if path is None or not path.exists():
            self.runner.refuse(InputError("Cohort: no group table yet; run a cohort with at least one subject that "
                                          "succeeds."))
            return None
        view = QTableView()
        view.setModel(_FrameModel(pd.read_csv(path)))
        self.viewer.window.add_dock_widget(view, name=f"Group table ({path.parent.parent.name})", area="right")
        return view

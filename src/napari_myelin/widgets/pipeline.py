"""Dock widget "Subject pipeline": run :func:`napari_myelin.workflows.pipeline.run_subject` on a subject
folder with per-step progress and Cancel, show the summary, and open the results as layers."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton
from napari.layers import Layer
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from .._reader import read_results
from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.pipeline import run_subject
from napari_myelin.workflows.steps import summary_rows
from ._runner import Runner


class PipelineWidget(QWidget):
    """Choose a BIDS-like subject folder and an output folder, press Run."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.subject = FileEdit(label="subject folder", mode="d")
        self.out = FileEdit(label="output folder", mode="d")
        self.preset = ComboBox(label="registration", choices=["fast", "accurate", "affine"], value="fast")
        self.force = CheckBox(text="redo finished steps", value=False)
        self.open_results = CheckBox(text="open results when done", value=True)
        self.run_button = PushButton(text="Run")
        self.run_button.changed.connect(self.run)
        self.form = Container(widgets=[self.subject, self.out, self.preset, self.force, self.open_results,
                                       self.run_button])
        self.runner = Runner()
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["step", "status", "seconds", "note"])
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.runner)
        layout.addWidget(self.table)
        self.result = None

    def run(self, _value=None):
        """Start the pipeline in a thread worker (returns it, or ``None`` when input is refused)."""
        subject, out = str(self.subject.value), str(self.out.value)
        if subject in ("", ".") or out in ("", "."):
            self.runner.refuse(InputError("Subject pipeline: choose a subject folder and an output folder."))
            return None
        return self.runner.start(run_subject, self._done, subject_dir=subject, out_dir=out,
                                 force=self.force.value, preset=self.preset.value)

    def _done(self, result) -> None:
        self.result = result
        rows = summary_rows(result.steps)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, key in enumerate(("step", "status", "seconds", "note")):
                self.table.setItem(i, j, QTableWidgetItem(str(row[key])))
        if self.open_results.value:
            for data, attrs, kind in read_results(result.out_dir / f"sub-{result.subject}"):
                self.viewer.add_layer(Layer.create(data, attrs, kind))

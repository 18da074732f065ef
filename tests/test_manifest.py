"""The npe2 manifest: valid, and every command it names imports (what `npe2 validate` checks, and more)."""

from __future__ import annotations

import importlib
import subprocess
import sys

from npe2 import PluginManifest


def test_npe2_validate_passes():
    run = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-myelin"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout


def test_every_contribution_resolves_to_a_callable():
    manifest = PluginManifest.from_distribution("napari-myelin")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    for python_name in commands.values():
        module, attr = python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), python_name
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {
        "Myelin water (MWF)", "Diffusion kurtosis (DKI)", "Susceptibility (QSM)", "Relaxometry (QPM)",
        "Magnetization transfer (MTsat)", "χ-separation",
        "Register to template", "Integrated myelin map (CNN)", "ROI statistics", "NAWM abnormality", "Subject pipeline", "Cohort",
        "Myelin workspace",
    }
    assert {s.display_name for s in manifest.contributions.sample_data} >= {"Myelin phantom"}
    assert [r.command for r in manifest.contributions.readers] == ["napari-myelin.read_nifti",
                                                                    "napari-myelin.read_dicom"]

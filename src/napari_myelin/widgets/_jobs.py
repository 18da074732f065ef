"""Functions the docks run in a worker process (:meth:`~napari_myelin.widgets._runner.Runner.start_process`).

A spawned process imports the module of the function it runs: this one imports neither Qt nor napari,
so a worker starts in about the time it takes to import the core. Each function follows the
progress/cancel protocol of :mod:`napari_myelin.utils.progress` and returns something picklable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._reader import read_results
from napari_myelin.io.resample import resample_like
from napari_myelin.io.volume import Volume
from napari_myelin.utils.progress import step
from napari_myelin.workflows.chisep import chi_separation, r2_on_gre, spin_echo_r2
from napari_myelin.workflows.pipeline import PipelineResult, run_subject


@dataclass
class PipelineLayers:
    """A :class:`~napari_myelin.workflows.pipeline.PipelineResult` and the results read as layer data tuples."""

    result: PipelineResult
    layers: list[tuple] = field(default_factory=list)


def pipeline_with_layers(subject_dir, out_dir, *, force: bool = False, preset: str = "fast",
                         open_results: bool = True, progress=None, cancel=None, **kwargs) -> PipelineLayers:
    """Run :func:`~napari_myelin.workflows.pipeline.run_subject` and, with ``open_results``, read its results as
    layer data (so the files are read in the worker, not on the window's thread)."""
    result = run_subject(subject_dir=subject_dir, out_dir=out_dir, force=force, preset=preset,
                         progress=progress, cancel=cancel, **kwargs)
    layers = []
    if open_results:
        step(progress, cancel, 1.0, "reading the results")
        layers = read_results(Path(result.out_dir) / f"sub-{result.subject}")
    return PipelineLayers(result, layers)


def check_overlap(vol: Volume, grid: Volume, name: str) -> None:
    """Refuse ``vol`` (3D or a series) when its field of view does not overlap ``grid``'s (a quick check on an
    array of ones, before a worker starts).

    Raises
    ------
    InputError
        No voxel of ``grid`` lies inside ``vol``.
    """
    ones = np.ones(vol.shape[:3], np.uint8)
    if ones.shape != tuple(grid.shape[:3]) or not np.allclose(vol.affine, grid.affine, atol=1e-4):
        resample_like(Volume(ones, vol.affine), Volume(np.zeros(grid.shape[:3], np.uint8), grid.affine), order=0,
                      name=name)


def chi_separation_from_r2(*, r2: Volume, r2_name: str, r2_units: str | None, affine, phase, progress=None,
                           cancel=None, **kwargs):
    """:func:`~napari_myelin.workflows.chisep.chi_separation` with its R2 computed here (in the worker) from a
    spin-echo series, a T2 or an R2 map (:func:`~napari_myelin.workflows.chisep.spin_echo_r2`) and brought to the
    GRE grid (:func:`~napari_myelin.workflows.chisep.r2_on_gre`)."""
    step(progress, cancel, 0.0, "R2 on the GRE grid")
    grid = Volume(np.zeros(np.shape(phase)[:3], np.uint8), affine)
    on_gre = r2_on_gre(spin_echo_r2(r2, name=r2_name, units=r2_units), grid, name=r2_name)
    return chi_separation(phase=phase, affine=affine, r2=on_gre, progress=progress, cancel=cancel, **kwargs)


def roi_statistics_scored(normative=None, covariates=None, **kwargs):
    """:func:`~napari_myelin.stats.roi.roi_statistics` (``kwargs``) and, with a normative model (a folder), the
    scores of its table; returns ``(statistics, scores or None)`` (the ROI statistics dock's work, in a worker:
    the statistics of many labels are computed by Python code that holds the GIL)."""
    from napari_myelin.stats.normative import score_subject
    from napari_myelin.stats.roi import roi_statistics
    from napari_myelin.workflows.normative import open_model

    result = roi_statistics(**kwargs)
    if normative is None:
        return result, None
    return result, score_subject(result.table, open_model(normative), covariates)

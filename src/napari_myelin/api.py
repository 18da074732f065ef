"""The public Python API of napari-myelin, in one place.

Every name here is importable from its home module too (shown below); scripts that import from
``napari_myelin.api`` keep working when modules move inside a domain. Nothing here imports Qt or
napari.

Files: :class:`Volume`, :func:`load_volume`, :func:`save_volume`, :func:`save_maps`,
:func:`load_echo_series`, :func:`read_bval_bvec`, :class:`Maps`, :func:`resample_like`,
:func:`b1_on_grid`, :func:`read_lut`, :func:`write_lut`, :func:`find_subject`.

Estimators: :func:`myelin_water` (:func:`fit_t2_distribution` + :func:`t2_parts`),
:func:`fit_dki`, :func:`fit_qsm`, :func:`qpm` (:func:`fit_vfa`, :func:`myelin_map`,
:func:`fit_mwf_calibration`), :func:`fit_mtsat`, :func:`separate_susceptibility` (chi-separation;
:func:`chi_separation` runs it from the GRE and an R2 map).

Standard space: :func:`load_template`, :func:`load_tract_atlas`, :func:`load_labels`,
:func:`register_to_template`, :func:`coregister`, :func:`register_subject`,
:func:`build_database`, :func:`load_database`.

Simulation: :func:`make_phantom`, :func:`write_phantom`.

Fusion: :func:`fuse`, :func:`fuse_native`, :func:`train_fusion`, :func:`load_model`,
:func:`save_model`.

Statistics: :func:`roi_statistics`, :func:`roi_values`, :func:`correlation_table`,
:func:`polygons_to_labels`, :func:`write_csv`, :func:`build_normative`, :func:`read_normative`,
:func:`compare_to_normative`, :func:`score_subject`, :func:`load_normative_model`.

Normative models: :func:`build_normative_model`, :func:`abnormality_map`.

Workflows: :func:`run_subject`, :func:`run_cohort`, :func:`build_training_set`, :func:`tract_chart`.

Errors and progress: :class:`InputError`, :class:`Cancelled`.
"""

from napari_myelin.align.atlas import load_labels, load_template, load_tract_atlas
from napari_myelin.align.database import build_database, load_database
from napari_myelin.align.registration import coregister, register_subject, register_to_template
from napari_myelin.fusion.inference import fuse, fuse_native
from napari_myelin.fusion.training import train_fusion
from napari_myelin.fusion.weights import load_model, save_model
from napari_myelin.io.bids import find_subject
from napari_myelin.io.lut import read_lut, write_lut
from napari_myelin.io.maps import Maps
from napari_myelin.io.resample import b1_on_grid, resample_like
from napari_myelin.io.volume import Volume, load_echo_series, load_volume, read_bval_bvec, save_maps, save_volume
from napari_myelin.reconst.chisep import separate_susceptibility
from napari_myelin.reconst.dki import fit_dki
from napari_myelin.reconst.mtsat import fit_mtsat
from napari_myelin.reconst.mwf import fit_t2_distribution, myelin_water, t2_parts
from napari_myelin.reconst.qpm import fit_mwf_calibration, fit_vfa, myelin_map, qpm
from napari_myelin.reconst.qsm import fit_qsm
from napari_myelin.sims.phantom import make_phantom, write_phantom
from napari_myelin.stats.normative import build_normative, compare_to_normative, read_normative, score_subject
from napari_myelin.stats.normative_model import load_normative_model
from napari_myelin.stats.roi import correlation_table, polygons_to_labels, roi_statistics, roi_values, write_csv
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import Cancelled
from napari_myelin.workflows.abnormality import abnormality_map
from napari_myelin.workflows.chisep import chi_separation
from napari_myelin.workflows.cohort import run_cohort
from napari_myelin.workflows.normative import build_normative_model
from napari_myelin.workflows.pipeline import run_subject
from napari_myelin.workflows.report import tract_chart
from napari_myelin.workflows.training_set import build_training_set

__all__ = [
    "Cancelled", "InputError", "Maps", "Volume", "abnormality_map", "b1_on_grid", "build_database", "build_normative",
    "build_normative_model", "load_normative_model", "score_subject",
    "build_training_set", "chi_separation", "compare_to_normative", "coregister", "correlation_table",
    "find_subject",
    "fit_dki", "fit_mtsat", "fit_mwf_calibration", "fit_qsm", "fit_t2_distribution", "fit_vfa", "fuse", "fuse_native",
    "load_database", "load_echo_series", "load_labels", "load_model", "load_template", "load_tract_atlas",
    "load_volume", "make_phantom", "myelin_map", "myelin_water", "polygons_to_labels", "qpm",
    "read_bval_bvec", "read_lut", "read_normative", "register_subject", "register_to_template",
    "resample_like", "roi_statistics", "roi_values", "run_cohort", "run_subject", "save_maps", "save_model",
    "save_volume", "separate_susceptibility", "t2_parts", "tract_chart", "train_fusion", "write_csv", "write_lut", "write_phantom",
]

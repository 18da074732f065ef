"""chi-separation from the acquisitions: a multi-echo GRE (local field and R2*) and a spin echo (R2).

:func:`chi_separation` is what the command line and the dock run: QSM of the GRE
(:func:`~napari_myelin.reconst.qsm.fit_qsm`: local field, R2*, chi, mask), then
:func:`~napari_myelin.reconst.chisep.separate_susceptibility` with an R2 map already on the GRE grid.
:func:`spin_echo_r2` turns what the user has into R2 (1/s) on its own grid -- an R2 map, a T2 map (e.g.
the geometric-mean T2 of the MWF fit, sidecar ``Units`` "s" or "ms") or the multi-echo spin echo itself
(weighted log-linear mono-exponential fit, :func:`~napari_myelin.reconst.decay.decay_rate`, from the
second echo: the first echo of a CPMG train lacks the stimulated-echo pathways that the later echoes
carry when the refocusing angle is below 180 deg). :func:`r2_on_gre` brings it onto the GRE grid by
world coordinates (same session) or through a registration. :func:`step_chisep` is the pipeline step
(:mod:`napari_myelin.workflows.pipeline`): mono-exponential R2 of the subject's MESE, moved to the GRE
grid through the subject's rigid co-registrations, the maps on the GRE grid and in template space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.io.resample import resample_like
from napari_myelin.io.volume import Volume, save_volume
from napari_myelin.reconst.chisep import separate_susceptibility
from napari_myelin.reconst.decay import background_sigma, decay_rate
from napari_myelin.reconst.masking import brain_mask
from napari_myelin.reconst.qsm import fit_qsm
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step, subrange

#: Maps of :func:`chi_separation` (and files of ``napari-myelin chisep``).
CHISEP_MAPS = ("chi_para", "chi_dia", "r2prime", "r2star", "chi", "mask")

#: Maps of the pipeline step warped to the template.
TEMPLATE_MAPS = ("chi_para", "chi_dia")

#: GRE voxels whose interpolation weight on known R2 voxels is below this are unknown (see :func:`r2_on_gre`).
_VALID = 0.5

_T2_UNITS = {"s": 1.0, "ms": 1e-3}
_R2_UNITS = ("", "1/s", "s^-1", "/s", "hz")


def spin_echo_r2(vol: Volume, *, name: str | None = None, units: str | None = None) -> Volume:
    """R2 (1/s) on the grid of ``vol``, 0 where unknown.

    ``vol`` is a 4D multi-echo spin echo (``EchoTime`` list in its metadata; mono-exponential fit from the
    second echo in its automatic brain mask, noise floor from the background), a 3D T2 map (``Units`` "s"
    or "ms") or a 3D R2 map (``Units`` 1/s or none); ``units`` overrides the metadata's ``Units``.

    Raises
    ------
    InputError
        A series without echo times, a map that is neither 3D nor a series, or an R2 map whose values
        look like T2 in seconds.
    """
    name = name or (str(vol.path) if vol.path else "R2 map")
    data = np.asarray(vol.data, np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        te = vol.metadata.get("EchoTime")
        if te is None or np.atleast_1d(te).size != data.shape[3]:
            raise InputError(f"{name}: a spin-echo series needs one EchoTime (s) per echo in its sidecar.")
        mask = brain_mask(data)
        r2 = decay_rate(data[..., 1:], np.atleast_1d(te)[1:], mask, noise_sigma=background_sigma(data[..., 0], mask),
                        name=name)
        return _r2_volume(vol, r2)
    if data.ndim != 3:
        raise InputError(f"{name}: has {data.ndim} dimensions; give a 3D R2 or T2 map or the 4D spin-echo series.")
    units = str(vol.metadata.get("Units", "") if units is None else units).strip().lower()
    if units in _T2_UNITS:
        t2 = data * _T2_UNITS[units]
        return _r2_volume(vol, np.where(t2 > 0, 1.0 / np.where(t2 > 0, t2, 1.0), 0.0))
    if units not in _R2_UNITS:
        raise InputError(f"{name}: its Units '{units}' are neither R2 (1/s) nor T2 (s, ms); give an R2 or T2 map.")
    positive = data[np.isfinite(data) & (data > 0)]
    if positive.size and np.median(positive) < 1.0:
        raise InputError(f"{name}: its median {np.median(positive):.3g} looks like T2 in seconds, not R2 in 1/s; "
                         "give R2, or a T2 map with Units \"s\" in its sidecar.")
    return _r2_volume(vol, np.where(np.isfinite(data) & (data > 0), data, 0.0))


def _r2_volume(source: Volume, r2: np.ndarray) -> Volume:
    """R2 (1/s, float32) on the grid of ``source``, keeping its path for messages and provenance."""
    return Volume(np.asarray(r2, np.float32), source.affine.copy(), None, {"Units": "1/s"}, source.path)


def r2_on_gre(r2: Volume, gre: Volume, move: Callable[[Volume], np.ndarray] | None = None, *,
              name: str | None = None) -> np.ndarray:
    """An R2 map (:func:`spin_echo_r2`) on the GRE grid, 0 where unknown.

    ``move`` maps a volume on the R2 grid to an array on the GRE grid (a registration); by default the
    two grids are related by world coordinates (one session: :func:`~napari_myelin.io.resample.resample_like`,
    linear). Normalised interpolation: the map times its validity (R2 > 0) and the validity are moved, and
    their ratio averages known R2 only (unknown neighbours do not pull it towards 0); GRE voxels that
    draw less than half their interpolation weight from known R2 are unknown.
    ``name`` (default: the file) names the map in messages.

    Raises
    ------
    InputError
        The two fields of view do not overlap (no affine relation: another subject or session).
    """
    name = name or (str(r2.path) if r2.path else "R2 map")
    if move is None:
        def move(v: Volume) -> np.ndarray:
            return resample_like(v, gre, order=1, name=name)
    known = np.asarray(r2.data) > 0
    moved = np.asarray(move(r2.with_data(np.where(known, r2.data, 0).astype(np.float32))), np.float32)
    weight = np.asarray(move(r2.with_data(known.astype(np.float32))), np.float32)
    if not (weight > _VALID).any():
        raise InputError(f"{name}: no R2 voxel lands inside the GRE field of view; give the R2 of this subject "
                         "and session.")
    return np.where(weight > _VALID, moved / np.where(weight > 0, weight, 1.0), 0.0).astype(np.float32)


def chi_separation(
    magnitude: np.ndarray,
    phase: np.ndarray,
    echo_times,
    r2: np.ndarray,
    *,
    field_strength: float | None,
    affine: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    relaxometric_constant=None,
    qsm_options: dict | None = None,
    progress=None,
    cancel=None,
) -> Maps:
    """QSM of a multi-echo GRE, then chi-separation with ``r2`` (1/s, on the GRE grid).

    Parameters
    ----------
    magnitude, phase, echo_times, field_strength, affine, mask
        As for :func:`~napari_myelin.reconst.qsm.fit_qsm` (at least two echoes: R2* needs them).
    r2 : ndarray (X, Y, Z)
        R2 (1/s) on the GRE grid (:func:`r2_on_gre`), 0 where unknown.
    relaxometric_constant : float or (float, float), optional
        Hz/ppm (default 137 x B0 / 3 T), see :func:`~napari_myelin.reconst.chisep.separate_susceptibility`.
    qsm_options : dict, optional
        Further keyword arguments of ``fit_qsm`` (unwrap, bfr, inversion ...).

    Returns
    -------
    Maps
        :data:`CHISEP_MAPS`: ``chi_para``, ``chi_dia`` (ppm, >= 0), ``r2prime``, ``r2star`` (1/s), ``chi``
        (ppm, the QSM) and ``mask``; the parameters of both steps.

    Raises
    ------
    InputError
        A single-echo GRE (no R2*), and every bad input of the two steps.
    """
    n_echo = 1 if np.ndim(phase) == 3 else np.shape(phase)[3]
    if n_echo < 2:
        raise InputError(f"phase: has {n_echo} echo; chi-separation needs R2*, i.e. a multi-echo GRE with at least "
                         "two echoes and their echo times.")
    qsm = fit_qsm(magnitude, phase, echo_times, field_strength=field_strength, affine=affine, mask=mask,
                  progress=subrange(progress, 0.0, 0.6), cancel=cancel, **(qsm_options or {}))
    sep = separate_susceptibility(qsm["local_field"], qsm["r2star"], r2, b0=field_strength, mask=qsm["mask"],
                                  affine=affine, relaxometric_constant=relaxometric_constant,
                                  progress=subrange(progress, 0.6, 1.0), cancel=cancel)
    step(progress, cancel, 1.0, "done")
    both = {**qsm.arrays, **sep.arrays}
    return Maps({k: both[k] for k in CHISEP_MAPS}, units={k: {**qsm.units, **sep.units}[k] for k in CHISEP_MAPS},
                descriptions={k: {**qsm.descriptions, **sep.descriptions}[k] for k in CHISEP_MAPS},
                method=f"{qsm.method}; {sep.method}", parameters={"QSM": qsm.parameters, "ChiSeparation": sep.parameters})


def step_chisep(s, regs, progress=None, cancel=None) -> list[Path]:
    """The pipeline step: R2 of the subject's MESE on the GRE grid, chi-separation, template maps.

    ``s`` is the pipeline's subject (:class:`napari_myelin.workflows.pipeline._Subject`) after the ``qsm``
    step, ``regs`` its :class:`~napari_myelin.workflows.pipeline.SubjectRegistrations` (the MESE and GRE
    grids are related through the rigid co-registration to the subject reference: registered even when
    the subject moved between the series).
    """
    from napari_myelin.workflows.pipeline import TEMPLATE_SPACE

    step(progress, cancel, 0.0, "R2 of the spin echo")
    r2 = spin_echo_r2(s.acquisition("mese"))
    local, r2star, mask = (s.load("megre", n) for n in ("local_field", "r2star", "mask"))
    r2_gre = r2_on_gre(r2, local, lambda v: regs.between(v, "mese", "megre").data)
    b0 = (local.metadata.get("Parameters") or {}).get("MagneticFieldStrength")  # what the qsm step used
    maps = separate_susceptibility(local.data, r2star.data, r2_gre, b0=b0, mask=mask.data, affine=local.affine,
                                   progress=subrange(progress, 0.1, 0.9), cancel=cancel)
    inputs = s.files.mese + [s.path("megre", n) for n in ("local_field", "r2star", "mask")]
    out = s.save(maps, "megre", local, inputs, ("chi_para", "chi_dia", "r2prime"))
    for name in TEMPLATE_MAPS:
        warped = regs.to_template(local.with_data(maps[name]), "megre")
        out.append(save_volume(np.asarray(warped.data, np.float32), s.path(TEMPLATE_SPACE, name), warped.affine,
                               sidecar={"Units": maps.units[name], "Description": f"{name} warped to {TEMPLATE_SPACE}"}))
    step(progress, cancel, 1.0, "done")
    return out

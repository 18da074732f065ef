"""One independent subject: :class:`IndependentSubject`, :func:`make_independent_subject` and the frozen seeds.

All random draws come from ``numpy.random.SeedSequence([seed, 16])`` spawned into independent
streams, in this order: anatomy and tissue (:func:`.anatomy.draw_anatomy`), lesion relaxation changes,
head pose (:func:`.geometry.draw_pose`), scanner fields (:func:`.fields.draw_fields`), then one noise
stream per acquisition (B1 map, MESE, DWI, GRE, SPGR), then (added later, after all of these, so that
the older acquisitions of a seed did not change) the noise of the MTS trio and the magnetization-transfer
and chi-separation parameters (:func:`draw_extra`). A seed therefore gives one subject, and adding
draws to one stream never changes the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_myelin.sims.independent.acquire import acquire_b1, acquire_dwi, acquire_mese, acquire_mts, acquire_spgr
from napari_myelin.sims.independent.anatomy import draw_anatomy
from napari_myelin.sims.independent.constants import (CHISEP_RANGES, DEFAULT_SNR, HEAD_CENTRE_MNI, MESE_REF_SLICE_RATIO,
                                                      MT_RANGES, SIZES)
from napari_myelin.sims.independent.fields import draw_fields
from napari_myelin.sims.independent.geometry import draw_pose
from napari_myelin.sims.independent.gre import acquire_gre
from napari_myelin.sims.independent.session import Session
from napari_myelin.sims.independent.spgr import SPOILING
from napari_myelin.sims.independent.tissue import lesion_changes
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step

#: The frozen test set. These seeds are for measuring only: they were never used, and must never be
#: used, to choose a default, a loss, a prior, a threshold or any other setting of an estimator or of
#: this simulator. Tune on other seeds; report on these.
FROZEN_TEST_SEEDS = (1601, 1602, 1603, 1604, 1605)
_NOISE_STREAMS = ("b1", "mese", "dwi", "gre", "spgr")
#: Streams spawned after the first nine (their order must never change): MTS noise, MT and chi-sep draws.
_LATER_STREAMS = ("mts", "extra")


@dataclass
class IndependentSubject:
    """A subject of the independent simulator.

    Attributes
    ----------
    acq : dict of str to Volume
        ``mese``, ``dwi``, ``gre_mag``, ``gre_phase``, ``spgr``, ``b1`` and (option ``mt``) ``mts_mtw``,
        ``mts_pdw``, ``mts_t1w`` (the layout of the project phantom).
    truth : dict of str to dict of str to Volume
        Truth maps per modality (``mese``, ``dwi``, ``gre``, ``spgr``, ``b1``, ``mts``) on that modality's grid.
    lut : DataFrame
        Tract lookup table.
    parameters : dict
        Everything drawn for this subject (tissue, tracts, atrophy, lesions, pose, fields) and the options.
    """

    acq: dict
    truth: dict
    lut: pd.DataFrame
    parameters: dict = field(default_factory=dict)


def _snr(snr) -> dict:
    """Per-series SNR from ``None`` (defaults), a number (every series) or a dict (overrides)."""
    out = dict(DEFAULT_SNR)
    if isinstance(snr, dict):
        out.update({k: float(v) for k, v in snr.items()})
    elif snr is not None:
        out = {k: float(snr) for k in out}
    if set(out) != set(DEFAULT_SNR) or not all(v > 0 for v in out.values()):
        raise InputError(f"snr={snr!r}: give a positive number or a dict with keys {sorted(DEFAULT_SNR)}.")
    return out


def draw_extra(rng: np.random.Generator) -> dict:
    """The subject's magnetization-transfer (:data:`.constants.MT_RANGES`) and chi-separation
    (:data:`.constants.CHISEP_RANGES`) parameters, uniform draws in a fixed order."""
    return {k: float(rng.uniform(*r)) for k, r in (*MT_RANGES.items(), *CHISEP_RANGES.items())}


def _session(seed: int, size: str, snr: dict) -> Session:
    """Draw the subject and place it in the scanner (module docstring)."""
    n = 4 + len(_NOISE_STREAMS)
    streams = [np.random.default_rng(s) for s in
               np.random.SeedSequence([seed, 16]).spawn(n + len(_LATER_STREAMS))]
    anatomy = draw_anatomy(streams[0])
    tissue = {**anatomy["tissue"], **lesion_changes(streams[1]), **draw_extra(streams[n + 1])}
    pose = draw_pose(streams[2])
    fields = draw_fields(streams[3], pose.to_scanner(HEAD_CENTRE_MNI)[:, 0])
    return Session(anatomy=anatomy, pose=pose, fields=fields, tissue=tissue, size=size, snr=snr,
                   noise=dict(zip(_NOISE_STREAMS + _LATER_STREAMS[:1], streams[4:n + 1])))


def make_independent_subject(seed: int, size: str = "small", snr=None, *, mese_exchange: bool = False,
                             refocusing_ratio: float = MESE_REF_SLICE_RATIO, spoiling: str = "ideal", mt: bool = True,
                             chi_separation: bool = False, progress=None, cancel=None) -> IndependentSubject:
    """Simulate one subject with physics independent of the estimators (see :mod:`napari_myelin.sims.independent`).

    Parameters
    ----------
    seed : int
        Subject seed (use :data:`FROZEN_TEST_SEEDS` only to measure, never to tune).
    size : {"small", "full"}
        ``small``: 4-4.5 mm acquisitions (tests); ``full``: 2-2.4 mm.
    snr : float, dict or None
        Mean brain signal of each series' reference volume over the noise sigma; ``None``: the defaults
        of :data:`.constants.DEFAULT_SNR` (MESE 200, DWI 50, GRE 200, SPGR 200); ``inf``: no noise.
    mese_exchange : bool
        Two-site exchange between myelin and IE water in the MESE (EPG-X; pools at their median T2).
    refocusing_ratio : float
        MESE refocusing slab over excitation slice thickness (default 3; 1 = equal slices).
    spoiling : {"ideal", "rf50", "rf117"}
        SPGR spoiling: perfect, or RF spoiling with a 50 or 117 deg increment (EPG-X).
    mt : bool
        Add the MT-, PD- and T1-weighted SPGR trio (:mod:`.mt`) and its truth (``truth["mts"]``).
    chi_separation : bool
        GRE with separated susceptibility sources (:mod:`.gre`): iron in white matter and every water
        compartment's R2* = its spin-echo R2 + the static-dephasing R2' of the paramagnetic and diamagnetic
        sources (changes the GRE, nothing else); ``False`` keeps the GRE of earlier versions. The truth
        ``chi_para`` / ``chi_dia`` is there either way.
    progress, cancel
        See :func:`napari_myelin.utils.progress.step`.

    Returns
    -------
    IndependentSubject
    """
    if size not in SIZES:
        raise InputError(f"size={size!r}: unknown size; choose 'small' or 'full'.")
    if spoiling not in SPOILING:
        raise InputError(f"spoiling={spoiling!r}: choose one of {', '.join(SPOILING)}.")
    if not 1.0 <= float(refocusing_ratio) <= 5.0:
        raise InputError(f"refocusing_ratio={refocusing_ratio}: give a slab ratio between 1 and 5.")
    snr_d = _snr(snr)
    step(progress, cancel, 0.0, "drawing the subject")
    se = _session(int(seed), size, snr_d)
    acq, truth = {}, {}
    acq["b1"], truth["b1"] = acquire_b1(se)
    step(progress, cancel, 0.1, "multi-echo spin echo")
    acq["mese"], truth["mese"] = acquire_mese(se, exchange=mese_exchange, refocusing_ratio=refocusing_ratio)
    step(progress, cancel, 0.35, "diffusion")
    acq["dwi"], truth["dwi"] = acquire_dwi(se)
    step(progress, cancel, 0.6, "multi-echo gradient echo")
    acq["gre_mag"], acq["gre_phase"], truth["gre"] = acquire_gre(se, chi_separation=chi_separation)
    step(progress, cancel, 0.8, "SPGR")
    acq["spgr"], truth["spgr"] = acquire_spgr(se, spoiling=spoiling)
    if mt:
        step(progress, cancel, 0.9, "MT-weighted SPGR")
        mts, truth["mts"] = acquire_mts(se)
        acq.update(mts)
    step(progress, cancel, 1.0, "subject ready")
    options = {"mese_exchange": bool(mese_exchange), "refocusing_ratio": float(refocusing_ratio), "spoiling": spoiling,
               "mt": bool(mt), "chi_separation": bool(chi_separation)}
    return IndependentSubject(acq=acq, truth=truth, lut=se.anatomy["lut"], parameters=_parameters(se, seed, options))


def _parameters(se: Session, seed: int, options: dict) -> dict:
    """What was drawn for the subject, as JSON-ready values."""
    p, f = se.pose, se.fields
    return {
        "seed": int(seed), "size": se.size, "snr": se.snr, **options,
        "frozen_test_seed": int(seed) in FROZEN_TEST_SEEDS,
        "tissue": {k: round(float(v), 5) for k, v in se.tissue.items()},
        **{k: v for k, v in se.anatomy["parameters"].items() if k != "tissue"},
        "pose": {"scale": p.scale.round(4).tolist(), "rotation": p.rotation.round(5).tolist(),
                 "translation_mm": p.translation.round(2).tolist()},
        "fields": {"b1_centre_gain": round(f.b1_gain, 4), "b1_tilt": f.b1_tilt.round(4).tolist(),
                   "receive_bias_amplitude": round(f.rx_amplitude, 4)},
    }

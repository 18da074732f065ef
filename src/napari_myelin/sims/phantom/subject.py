"""One simulated subject: :class:`Phantom` and :func:`make_phantom`.

:func:`make_phantom` reads top to bottom: check the arguments, build the subject's tissue on the model
grid (:mod:`.anatomy`), place it in the scanner (:mod:`.acquisitions`: pose, fields, noise), then
acquire the B1 map, MESE, DWI, GRE and SPGR, each with its truth maps on its own grid. All random draws
come from ``seed``, in a fixed order, so a seed gives one phantom. The MT-weighted trio (:mod:`.mt`) comes
last; its noise has its own generator (``[seed, 20]``), so the other acquisitions are those of a phantom
without it, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_myelin.sims.phantom.acquisitions import _b1_map, _dwi, _gre, _in_scanner, _mese, _Scan, _spgr
from napari_myelin.sims.phantom.anatomy import _model
from napari_myelin.sims.phantom.constants import SIZES
from napari_myelin.sims.phantom.mt import _mts
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step


@dataclass
class Phantom:
    """A simulated subject.

    Attributes
    ----------
    acq : dict of str to Volume
        ``mese``, ``dwi``, ``gre_mag``, ``gre_phase``, ``spgr``, ``b1``, ``mts_mtw``, ``mts_pdw``, ``mts_t1w``.
    truth : dict of str to dict of str to Volume
        Truth maps per modality (``mese``, ``dwi``, ``gre``, ``spgr``, ``b1``, ``mts``) on that modality's grid.
    lut : DataFrame
        Tract lookup table (``index``, ``name``, ``abbreviation``, ``hemisphere``).
    parameters : dict
        Seed, size, SNR, subject pose and the tract MWF values used.
    """

    acq: dict
    truth: dict
    lut: pd.DataFrame
    parameters: dict = field(default_factory=dict)


def make_phantom(seed: int = 0, size: str = "small", snr: float = 200.0, lesions: bool = False, *,
                 nawm_reduction: float = 0.25, progress=None, cancel=None) -> Phantom:
    """Simulate one subject: five acquisitions plus the truth maps on each acquisition's grid.

    Parameters
    ----------
    seed : int
        Random seed (pose, deformation, B1, per-tract variation, lesions, noise).
    size : {"small", "full"}
        ``"small"``: 4 mm model, coarse acquisitions (a few seconds, for tests);
        ``"full"``: 2 mm model, 2-2.4 mm acquisitions (the demo subject).
    snr : float
        Mean brain signal of the reference volume divided by the noise sigma (``inf``: no noise).
    lesions : bool
        Add demyelinating lesions and one tract of NAWM with MWF reduced by ``nawm_reduction``.
    nawm_reduction : float
        Relative MWF reduction (0-1) in the NAWM-demyelination tract.
    progress, cancel
        See :func:`.progress.step`.

    Returns
    -------
    Phantom
    """
    snr = _checked(size, snr, nawm_reduction)
    seed = int(seed)
    rng = np.random.default_rng(seed)
    cfg = SIZES[size]
    step(progress, cancel, 0.0, "building anatomy")
    model = _model(size, rng, bool(lesions), float(nawm_reduction))
    scan = _in_scanner(model, rng, seed, snr)
    acq, truth = {}, {}
    acq["b1"], truth["b1"] = _b1_map(scan, cfg["b1"])
    step(progress, cancel, 0.1, "multi-echo spin echo")
    acq["mese"], truth["mese"] = _mese(scan, cfg["mese"])
    step(progress, cancel, 0.3, "diffusion")
    acq["dwi"], truth["dwi"] = _dwi(scan, cfg["dwi"])
    step(progress, cancel, 0.55, "multi-echo gradient echo")
    acq["gre_mag"], acq["gre_phase"], truth["gre"] = _gre(scan, cfg["gre"], cfg["gre_echoes"], progress, cancel)
    step(progress, cancel, 0.85, "SPGR")
    acq["spgr"], truth["spgr"] = _spgr(scan, cfg["spgr"])
    step(progress, cancel, 0.95, "MT-weighted SPGR")
    mts, truth["mts"] = _mts(scan, cfg["mts"], np.random.default_rng([seed, 20]))
    acq.update(mts)
    step(progress, cancel, 1.0, "phantom ready")
    params = _parameters(scan, seed=seed, size=size, snr=snr, lesions=lesions, nawm_reduction=nawm_reduction)
    return Phantom(acq=acq, truth=truth, lut=model["lut"], parameters=params)


def _checked(size: str, snr: float, nawm_reduction: float) -> float:
    """Validate the arguments of :func:`make_phantom`; return ``snr`` as a float."""
    if size not in SIZES:
        raise InputError(f"size={size!r}: unknown phantom size; choose 'small' or 'full'.")
    snr = float(snr)
    if not snr > 0:
        raise InputError(f"snr={snr}: the signal-to-noise ratio must be positive; give e.g. 50 or 200.")
    if not 0 <= nawm_reduction < 1:
        raise InputError(f"nawm_reduction={nawm_reduction}: give a relative reduction between 0 and 1.")
    return snr


def _parameters(scan: _Scan, *, seed: int, size: str, snr: float, lesions: bool, nawm_reduction: float) -> dict:
    """The subject's parameters: arguments, pose and the per-tract MWF values drawn."""
    pose = scan.pose
    return {
        "seed": seed, "size": size, "snr": snr, "lesions": bool(lesions), "nawm_reduction": nawm_reduction,
        "pose": {"scale": pose.scale, "rotation": pose.rotation.round(6).tolist(),
                 "translation_mm": pose.translation.round(3).tolist()},
        "tract_mwf": scan.model["tract_mwf"],
    }

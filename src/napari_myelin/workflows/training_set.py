"""Training cohorts for the fusion network, built from the digital phantom.

:func:`build_training_set` makes one :class:`~napari_myelin.fusion.subjects.FusionSubject` per phantom seed:
inputs (MWF, FA, MK, QPM myelin map, QSM) on one grid (estimators mode: the 2 mm MNI template, where the
pipeline fuses; simulated mode: the phantom's multi-echo spin-echo grid), the true MWF as target, brain and
white-matter masks, tract labels and lesion / normal-appearing white-matter masks.

Two modes produce the inputs:

``"simulated"`` (*simulated estimators*; fast, for tests and experiments)
    Each map is derived from the phantom's ground truth with the noise and bias typical of its estimator,
    scaled with the phantom's SNR (reference 200):

    * MWF (multi-exponential T2, NNLS): ``0.9 MWF + N(0, s)``, ``s = 0.025 sqrt(200/SNR)``, lightly
      smoothed (sigma 0.5 voxel, as the regularised fit couples neighbours), plus a slow multiplicative
      B1/stimulated-echo residual (+-8 %), clipped to [0, 0.6];
    * FA, MK (DKI fit): truth ``+ N(0, 0.03 k)`` and ``+ N(0, 0.08 k)``, ``k = 200/SNR``;
    * QPM myelin (two-pool SPGR fit with fixed pool parameters): a monotone non-linear bias of the true
      MWF, ``0.02 + 0.7 f + 1.2 f^2``, plus a tissue term from T1 (``0.05 (1 - T1/1.5 s)`` clipped) and
      ``N(0, 0.012 k)``;
    * QSM: true susceptibility ``+ N(0, 0.012 k)`` ppm, smoothed (sigma 1 voxel), plus a slow background
      residue (+-0.01 ppm).

    These models are *not* the project's estimators: they are stand-ins with the same order of noise and
    bias, so training fits the CPU budget. The model card says so.

``"estimators"`` (what the shipped weights were trained on)
    The phantom is processed like a real subject (:func:`estimator_subject_arrays`): the project's own
    estimators run on its simulated acquisitions exactly as :mod:`napari_myelin.workflows.pipeline` runs them
    (``reconst.mwf.fit_t2_distribution`` + ``t2_parts``, ``reconst.dki.fit_dki``, ``reconst.qpm.qpm`` ->
    ``qpm_myelin``, ``reconst.qsm.fit_qsm`` -> ``chi``, ``reconst.mtsat.fit_mtsat`` -> ``mtsat``,
    ``reconst.chisep.separate_susceptibility`` -> ``chi_dia``), and the maps are brought to the 2 mm MNI template by
    the pipeline's own registrations (``workflows.pipeline.SubjectRegistrations``: rigid ``coregister`` of every
    modality to the SPGR volume at the largest flip angle, then ``register_to_template``). The true MWF
    (SPGR grid) goes through the reference's template transform, so a registration error moves the inputs
    relative to the target exactly as it would in a real subject. About 75 s per ``size="small"`` phantom
    on 2 idle cores (most of it the NNLS T2 fit), several minutes per ``"full"`` one; use ``cache_dir``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from napari_myelin.io.resample import b1_on_grid
from napari_myelin.utils.errors import InputError
from napari_myelin.fusion.subjects import FusionSubject
from napari_myelin.utils.progress import step, subrange

SNR_REFERENCE = 200.0

#: What the model card says about inputs made in the simulated mode.
SIMULATED_NOTE = (
    "Inputs were NOT produced by the project's estimators: they were derived from the phantom's true maps with "
    "noise and bias models standing in for each estimator (MWF: 0.9 x truth + smooth multiplicative residual + "
    "noise 0.025 sqrt(200/SNR); FA/MK: truth + noise; QPM myelin: 0.02 + 0.7 f + 1.2 f^2 + T1 tissue term + "
    "noise; QSM: truth + smoothed noise + slow background residue). Retrain with --mode estimators to learn "
    "the real estimators' noise and bias."
)


#: What the model card says about inputs made in the estimators mode.
ESTIMATORS_NOTE = (
    "Inputs are the project's own estimator outputs on simulated acquisitions: reconst.mwf.fit_t2_distribution + "
    "t2_parts (MWF), reconst.dki.fit_dki (FA, MK), reconst.qpm.qpm (qpm_myelin, with the phantom's B1 map), "
    "reconst.qsm.fit_qsm (chi), reconst.mtsat.fit_mtsat (mtsat, MT-weighted trio with the B1 map), "
    "reconst.chisep.separate_susceptibility (chi_dia; R2 of the spin echo by workflows.chisep.spin_echo_r2), each map "
    "brought to the 2 mm MNI ICBM152 template by the subject pipeline's "
    "registrations (workflows.pipeline.SubjectRegistrations: rigid coregister of each modality to the SPGR volume at the "
    "largest flip angle, then register_to_template; MTsat through the SPGR grid by world coordinates). Target: the phantom's true MWF on the SPGR grid, warped "
    "with the same reference-to-template transform."
)


def _phantom():
    try:
        from napari_myelin.sims.phantom import make_phantom
    except ImportError:
        raise InputError(
            "phantom: napari_myelin.sims.phantom is not available in this installation; train on a user cohort."
        ) from None
    return make_phantom


def _on_grid(vol, reference, order=1) -> np.ndarray:
    from napari_myelin.io.resample import resample_like

    return np.asarray(resample_like(vol, reference, order=order, name="phantom map"), dtype=np.float32)


def _find(truth: dict, *names: str):
    for modality in ("mese", "spgr", "dwi", "gre"):
        for n in names:
            if n in truth.get(modality, {}):
                return truth[modality][n]
    return None


def _slow_field(shape, rng, amplitude, sigma):
    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="nearest")
    f /= max(np.abs(f).max(), 1e-9)
    return amplitude * f


def simulate_estimates(truth: dict[str, np.ndarray], mask: np.ndarray, snr: float, rng: np.random.Generator):
    """Simulated estimator outputs from true maps (see the module docstring for the models).

    Parameters
    ----------
    truth : dict
        ``mwf`` (fraction), ``fa``, ``mk``, ``chi`` (ppm) and optionally ``t1`` (s), on one grid.
    mask : ndarray of bool
        Brain mask (outputs are 0 outside).
    snr : float
        Acquisition SNR; noise SDs scale with ``200 / snr``.

    Returns
    -------
    dict
        ``mwf``, ``fa``, ``mk``, ``qpm``, ``qsm`` (float32).
    """
    shape = mask.shape
    k = SNR_REFERENCE / float(snr)
    f = truth["mwf"].astype(np.float64)
    n = lambda s: rng.standard_normal(shape) * s
    sigma_mwf = 0.025 * np.sqrt(k)
    mwf = 0.9 * f * (1.0 + _slow_field(shape, rng, 0.08, 6.0)) + gaussian_filter(n(sigma_mwf * 1.6), 0.5)
    fa = truth["fa"] + n(0.03 * k)
    mk = truth["mk"] + n(0.08 * k)
    t1 = truth.get("t1")
    tissue = 0.0 if t1 is None else 0.05 * np.clip(1.0 - t1 / 1.5, -1.0, 1.0)
    qpm = 0.02 + 0.7 * f + 1.2 * f ** 2 + tissue + n(0.012 * k)
    qsm = gaussian_filter(truth["chi"] + n(0.012 * k * 2.0), 1.0) + _slow_field(shape, rng, 0.01, 8.0)
    out = {
        "mwf": np.clip(mwf, 0.0, 0.6), "fa": np.clip(fa, 0.0, 1.0), "mk": np.clip(mk, 0.0, 3.0),
        "qpm": np.clip(qpm, 0.0, 1.0), "qsm": qsm,
    }
    if "mtsat" in truth:  # B1-residual gain and noise
        out["mtsat"] = np.clip(truth["mtsat"] * (1.0 + _slow_field(shape, rng, 0.06, 6.0)) + n(0.08 * k), 0.0, 8.0)
    if "chi_dia" in truth:  # smoothed by the regularised solve, R2' leakage as a slow residue
        out["chi_dia"] = np.clip(gaussian_filter(truth["chi_dia"] + n(0.008 * k), 1.0)
                                 + _slow_field(shape, rng, 0.005, 8.0), 0.0, 0.5)
    return {key: np.where(mask, v, 0.0).astype(np.float32) for key, v in out.items()}


def estimator_maps(ph, *, mwf_mask=None, optional=("mtsat", "chi_dia"), progress=None,
                   cancel=None) -> dict[str, tuple]:
    """Run the project's estimators on a phantom's acquisitions, exactly as the subject pipeline does.

    ``reconst.mwf.fit_t2_distribution`` + ``t2_parts`` (brain mask from ``reconst.masking.brain_mask`` of the first
    echo, as :func:`napari_myelin.workflows.pipeline._step_mwf`), ``reconst.dki.fit_dki``, ``reconst.qpm.qpm`` (with
    the phantom's B1 map, ``qpm_myelin``) and ``reconst.qsm.fit_qsm`` (``chi``), all with their defaults.

    ``mwf_mask`` (bool array on the spin-echo grid), when given, is intersected with the brain mask of the
    NNLS fit (to fit a slab only, e.g. in a test: the NNLS fit is ~70 % of the time).

    Returns
    -------
    dict
        channel -> (pipeline grid name, Volume on that modality's native grid): ``mwf`` (``mese``),
        ``fa``/``mk`` (``dwi``), ``qpm`` (``vfa``), ``qsm`` (``megre``).
    """
    from napari_myelin.reconst import dki
    from napari_myelin.reconst import mwf
    from napari_myelin.reconst import qpm
    from napari_myelin.reconst import qsm

    acq = ph.acq
    out = {}
    step(progress, cancel, 0.0, "MWF estimator")
    mese = acq["mese"]
    brain = qsm.brain_mask(mese.data[..., 0])
    if mwf_mask is not None:
        brain = brain & np.asarray(mwf_mask, bool)
    fit = mwf.fit_t2_distribution(mese.data, mese.echo_times, mask=brain,
                                  progress=subrange(progress, 0.0, 0.8), cancel=cancel)
    out["mwf"] = ("mese", mese.with_data(np.asarray(mwf.t2_parts(fit)["mwf"], np.float32)))
    step(progress, cancel, 0.8, "DKI estimator")
    dwi = acq["dwi"]
    r = dki.fit_dki(dwi.data, dwi.bvals, dwi.bvecs, affine=dwi.affine, cancel=cancel)
    out["fa"] = ("dwi", dwi.with_data(np.asarray(r["fa"], np.float32)))
    out["mk"] = ("dwi", dwi.with_data(np.asarray(r["mk"], np.float32)))
    step(progress, cancel, 0.88, "QPM estimator")
    spgr = acq["spgr"]
    b1 = b1_on_grid(acq["b1"], spgr) if "b1" in acq else None
    r = qpm.qpm(spgr.data, spgr.metadata["FlipAngle"], spgr.metadata["RepetitionTime"], b1=b1, cancel=cancel)
    out["qpm"] = ("vfa", spgr.with_data(np.asarray(r["qpm_myelin"], np.float32)))
    step(progress, cancel, 0.94, "QSM estimator")
    mag, phase = acq["gre_mag"], acq["gre_phase"]
    r = qsm.fit_qsm(mag.data, phase.data, phase.echo_times, field_strength=phase.metadata.get("MagneticFieldStrength"),
                    affine=phase.affine, cancel=cancel)
    out["qsm"] = ("megre", phase.with_data(np.asarray(r["chi"], np.float32)))
    if "chi_dia" in optional:
        step(progress, cancel, 0.96, "chi-separation")
        out["chi_dia"] = ("megre", phase.with_data(_chi_dia(ph, r, phase, cancel)))
    if "mtsat" in optional and "mts_mtw" in acq:
        step(progress, cancel, 0.98, "MTsat estimator")
        out["mtsat"] = ("mts", _mtsat(acq, cancel))
    return {k: (g, v.with_data(np.nan_to_num(v.data))) for k, (g, v) in out.items()}


def _chi_dia(ph, qsm_maps, phase, cancel) -> np.ndarray:
    """chi_dia (ppm) as the pipeline's ``chisep`` step makes it: mono-exponential R2 of the MESE
    (:func:`~napari_myelin.workflows.chisep.spin_echo_r2`) on the GRE grid (world coordinates: the phantom's
    series share one frame), then :func:`~napari_myelin.reconst.chisep.separate_susceptibility` with the QSM
    fit's local field, R2* and mask."""
    from napari_myelin.reconst.chisep import separate_susceptibility
    from napari_myelin.workflows.chisep import r2_on_gre, spin_echo_r2

    r2 = r2_on_gre(spin_echo_r2(ph.acq["mese"], name="phantom MESE"), phase, name="phantom R2")
    b0 = float(phase.metadata.get("MagneticFieldStrength", 3.0))
    sep = separate_susceptibility(qsm_maps["local_field"], qsm_maps["r2star"], r2, b0=b0, mask=qsm_maps["mask"],
                                  affine=phase.affine, cancel=cancel)
    return np.asarray(sep["chi_dia"], np.float32)


def _mtsat(acq, cancel):
    """MTsat (p.u.) of the phantom's MTw/PDw/T1w trio with its B1 map (the pipeline's ``mtsat`` step)."""
    from napari_myelin.reconst.mtsat import fit_mtsat

    vols = [acq[k] for k in ("mts_mtw", "mts_pdw", "mts_t1w")]
    fa = [float(v.metadata["FlipAngle"]) for v in vols]
    tr = [float(v.metadata.get("RepetitionTimeExcitation", v.metadata.get("RepetitionTime"))) for v in vols]
    b1 = b1_on_grid(acq["b1"], vols[0]) if "b1" in acq else None
    r = fit_mtsat(*(np.asarray(v.data, np.float32).reshape(v.data.shape[:3]) for v in vols), flip_angles=fa,
                  repetition_times=tr, b1=b1, cancel=cancel)
    return vols[0].with_data(np.asarray(r["mtsat"], np.float32).reshape(vols[0].data.shape[:3]))


class _PhantomFiles:
    """What :class:`napari_myelin.workflows.pipeline.SubjectRegistrations` asks of a subject's file listing."""

    def present(self) -> dict[str, bool]:
        return {"mese": True, "dwi": True, "gre": True, "spgr": True, "b1": True}


class _PhantomAsSubject:
    """A phantom seen by the pipeline's registration code as a loaded subject (acquisitions in memory)."""

    def __init__(self, ph, xfm_dir) -> None:
        from pathlib import Path

        self.files = _PhantomFiles()
        self.xfm = Path(xfm_dir)
        self._acq = ph.acq

    def acquisition(self, key: str):
        return self._acq[key]


def register_phantom(ph, xfm_dir, *, preset: str = "fast", seed: int = 0, progress=None, cancel=None):
    """The subject pipeline's registrations of a phantom (:class:`napari_myelin.workflows.pipeline.SubjectRegistrations`).

    Each modality's image is rigidly co-registered (``align.registration.coregister``) to the SPGR volume at
    the largest flip angle, which is registered to the 2 mm MNI ICBM152 template
    (``register_to_template(preset=preset)``). Transforms are written to (and reused from) ``xfm_dir``.
    """
    from napari_myelin.workflows.pipeline import SubjectRegistrations

    return SubjectRegistrations(_PhantomAsSubject(ph, xfm_dir), preset, seed, progress, cancel)


def template_subject_arrays(ph, regs, maps) -> dict[str, np.ndarray]:
    """Estimated maps and the truth, warped to the template with the pipeline's transforms."""
    out = {c: _to_template(ph, regs, grid, v) for c, (grid, v) in maps.items()}
    tr = ph.truth["spgr"]  # the reference grid ("vfa"): the truth takes the reference's template transform

    def warp(name, interp="linear"):
        return np.asarray(regs.to_template(tr[name], "vfa", interp).data)

    out["target"] = warp("mwf").astype(np.float32)
    out["mask"] = warp("mask") > 0.5
    out["wm"] = warp("wm").astype(np.float32)
    out["labels"] = np.rint(warp("labels", "genericLabel")).astype(np.int32)
    out["lesion"] = warp("lesion") >= 0.5
    out["nawm"] = warp("nawm_demyelination") >= 0.5
    out["affine"] = np.asarray(regs.template.fixed.affine, float)
    for c in maps:
        out[c] = np.where(out["mask"], np.nan_to_num(out[c]), 0.0).astype(np.float32)
    return out


def _to_template(ph, regs, grid: str, vol) -> np.ndarray:
    """A native map warped to the template; MTS maps go through the SPGR grid by world coordinates (a phantom's
    series share one world frame, and the phantom's registrations have no MTS co-registration)."""
    if grid == "mts":
        ref = ph.truth["spgr"]["mwf"]
        vol, grid = ref.with_data(_on_grid(vol, ref)), "vfa"
    return np.asarray(regs.to_template(vol, grid, "linear").data, np.float32)


def _npz_cached(cache_dir, name: str, compute) -> dict:
    """``compute()`` (a dict of arrays), stored as ``cache_dir/name.npz`` (atomically) and read back on
    the next call; without ``cache_dir`` it is simply computed."""
    import io
    from pathlib import Path

    from napari_myelin.io.volume import atomic_write_bytes

    if cache_dir is None:
        return compute()
    cache = Path(cache_dir) / f"{name}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    out = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    atomic_write_bytes(cache, buf.getvalue())
    return out


def estimator_subject_arrays(seed: int, *, size: str = "small", snr: float = 200.0, lesions: bool = False,
                             preset: str = "fast", cache_dir=None, progress=None, cancel=None) -> dict:
    """A phantom processed like a real subject: estimators on its acquisitions, pipeline registration to MNI.

    The maps (``mwf``, ``fa``, ``mk``, ``qpm``, ``qsm``, ``mtsat``, ``chi_dia``) and the truth (``target`` =
    true MWF fraction, ``mask``, ``wm`` fraction, ``labels``, ``lesion``, ``nawm``) are returned on the 2 mm
    template grid (``affine``). With ``cache_dir`` the arrays are stored as ``.npz`` (and the transforms under
    ``xfm-...``) and reused: a subject is processed once.
    """
    tag = f"estimators_seed{seed}_{size}_snr{snr:g}_{'lesions' if lesions else 'clean'}_{preset}_mt-chisep"

    def make():
        return _phantom()(seed=seed, size=size, snr=snr, lesions=lesions)

    return _processed(make, tag, f"phantom seed {seed}", preset, cache_dir, progress, cancel)


def independent_subject_arrays(seed: int, *, size: str = "small", preset: str = "fast", cache_dir=None,
                               progress=None, cancel=None) -> dict:
    """A subject of the independent simulator (:mod:`napari_myelin.sims.independent`: its default SNRs, the MT
    trio, the GRE built from chi_para and chi_dia) processed exactly as :func:`estimator_subject_arrays`
    processes a phantom; the same keys."""
    tag = f"independent_seed{seed}_{size}_{preset}_mt-chisep"

    def make():
        from napari_myelin.sims.independent import make_independent_subject

        return make_independent_subject(seed, size=size, mt=True, chi_separation=True)

    return _processed(make, tag, f"independent seed {seed}", preset, cache_dir, progress, cancel)


def _processed(make, tag: str, label: str, preset: str, cache_dir, progress, cancel) -> dict:
    """Simulate a subject with ``make()``, run the estimators, register it, warp maps and truth to the template
    (cached as ``cache_dir/tag.npz``)."""
    import tempfile
    from pathlib import Path

    def compute() -> dict:
        step(progress, cancel, 0.0, label)
        ph = make()
        maps = estimator_maps(ph, progress=subrange(progress, 0.02, 0.85), cancel=cancel)
        with tempfile.TemporaryDirectory() as tmp:
            xfm = Path(cache_dir) / f"xfm-{tag}" if cache_dir is not None else Path(tmp)
            regs = register_phantom(ph, xfm, preset=preset, seed=0, progress=subrange(progress, 0.85, 0.98),
                                    cancel=cancel)
            out = template_subject_arrays(ph, regs, maps)
        step(progress, cancel, 1.0, f"{label} processed")
        return out

    return _npz_cached(cache_dir, tag, compute)


def phantom_truth(seed: int, *, size: str = "full", lesions: bool = False, cache_dir=None, progress=None,
                  cancel=None) -> dict:
    """True maps of ``make_phantom(seed, size, lesions=lesions)`` on its spin-echo grid (cached as ``.npz``).

    Returns a dict of arrays ``mwf`` (fraction), ``fa``, ``mk``, ``chi`` (ppm), ``t1`` (s), ``mask``, ``wm``
    (fraction), ``labels``, ``lesion``, ``nawm`` (NAWM demyelination) and ``affine``. Other modalities'
    truths are resampled onto the spin-echo grid by world coordinates (all acquisitions of the phantom
    share one world frame). With ``cache_dir`` the result is stored and reused (the phantom is deterministic
    for a seed); the noisy acquisitions are not needed in the simulated mode.
    """

    def compute() -> dict:
        make_phantom = _phantom()
        step(progress, cancel, 0.0, f"phantom seed {seed}")
        ph = make_phantom(seed=seed, size=size, snr=200.0, lesions=lesions)
        tr = ph.truth
        ref = tr["mese"]["mwf"]
        return {
            "mwf": np.asarray(ref.data, np.float32),
            "fa": _on_grid(tr["dwi"]["fa"], ref),
            "mk": _on_grid(tr["dwi"]["mk"], ref),
            "chi": _on_grid(tr["gre"]["chi"], ref),
            "chi_dia": _on_grid(tr["gre"]["chi_dia"], ref),
            "mtsat": _on_grid(tr["mts"]["mtsat"], ref),
            "t1": _on_grid(tr["spgr"]["t1"], ref),
            "mask": np.asarray(tr["mese"]["mask"].data).astype(bool),
            "wm": np.asarray(tr["mese"]["wm"].data, np.float32),
            "labels": np.asarray(tr["mese"]["labels"].data).astype(np.int32),
            "lesion": np.asarray(tr["mese"]["lesion"].data).astype(bool),
            "nawm": np.asarray(tr["mese"]["nawm_demyelination"].data).astype(bool),
            "affine": np.asarray(ref.affine, float),
        }

    return _npz_cached(cache_dir, f"phantom_truth_seed{seed}_{size}_{'lesions' if lesions else 'clean'}_mt-chisep",
                       compute)


def phantom_subject(seed: int, *, size: str = "full", snr: float = 200.0, lesions: bool = False,
                    mode: str = "simulated", preset: str = "fast", cache_dir=None, progress=None,
                    cancel=None) -> FusionSubject:
    """One fusion subject from ``make_phantom(seed, size, snr, lesions)`` (see the module docstring).

    White matter for training and evaluation: WM fraction > 0.5 inside the brain mask.
    """
    if mode not in ("simulated", "estimators"):
        raise InputError(f"mode '{mode}': unknown; use 'simulated' or 'estimators'.")
    if mode == "simulated":
        t = phantom_truth(seed, size=size, lesions=lesions, cache_dir=cache_dir, progress=progress, cancel=cancel)
        rng = np.random.default_rng([seed, int(snr), int(lesions), 7])
        inputs = simulate_estimates(t, t["mask"], snr, rng)
    else:
        t = estimator_subject_arrays(seed, size=size, snr=snr, lesions=lesions, preset=preset,
                                     cache_dir=cache_dir, progress=progress, cancel=cancel)
        inputs = None  # the estimated maps; the truth is ``target``
    return arrays_subject(t, f"phantom-seed{seed}", inputs,
                          {"seed": seed, "snr": snr, "lesions": lesions, "size": size, "mode": mode})


#: The maps a processed subject may hold (:func:`estimator_subject_arrays`), in network order.
INPUT_MAPS = ("mwf", "fa", "mk", "qpm", "qsm", "mtsat", "chi_dia")


def arrays_subject(t: dict, name: str, inputs: dict | None = None, meta: dict | None = None) -> FusionSubject:
    """A :class:`FusionSubject` from processed arrays (:func:`estimator_subject_arrays`,
    :func:`independent_subject_arrays`): the maps of :data:`INPUT_MAPS` present (or ``inputs``), the true MWF
    (``target``, else ``mwf``), white matter = WM fraction > 0.5 inside the brain mask."""
    mask = t["mask"]
    wm = (t["wm"] > 0.5) & mask
    lesion = t["lesion"] & mask if t["lesion"].any() else None
    nawm = t["nawm"] & wm if t["nawm"].any() else None
    zooms = np.sqrt((t["affine"][:3, :3] ** 2).sum(axis=0))
    if inputs is None:
        inputs = {c: t[c] for c in INPUT_MAPS if c in t}
    return FusionSubject(
        inputs=inputs, target=t.get("target", t["mwf"]), mask=mask, wm=wm, labels=t["labels"], lesion=lesion,
        nawm=nawm, affine=t["affine"], name=name, meta={**(meta or {}), "voxel_size_mm": zooms.tolist()},
    )


def build_training_set(
    seeds: Sequence[int],
    *,
    size: str = "full",
    snrs: Sequence[float] = (100.0, 200.0, 400.0),
    every_snr: bool = False,
    mode: str = "simulated",
    preset: str = "fast",
    cache_dir=None,
    progress=None,
    cancel=None,
) -> list[FusionSubject]:
    """Phantom cohort: lesions and NAWM demyelination on odd seeds, SNR cycling through ``snrs``.

    Seeds define the anatomy (the phantom's pose and deformation) and the noise; a subject's name carries
    its seed so that training and validation are split by subject. ``every_snr=True`` makes one subject
    per seed *and* SNR (independent noise realisations of the same anatomy; simulated mode only).
    """
    jobs = []
    for i, seed in enumerate(seeds):
        for snr in (snrs if every_snr else [snrs[i % len(snrs)]]):
            jobs.append((int(seed), float(snr)))
    subjects = []
    for j, (seed, snr) in enumerate(jobs):
        subjects.append(phantom_subject(seed, size=size, snr=snr, lesions=seed % 2 == 1, mode=mode,
                                        preset=preset, cache_dir=cache_dir,
                                        progress=subrange(progress, j / len(jobs), (j + 1) / len(jobs)),
                                        cancel=cancel))
    return subjects


def user_cohort(table: str, *, wm_threshold: float = 0.5) -> list[FusionSubject]:
    """Subjects of a user cohort listed in a TSV/CSV table.

    Columns: ``subject``, ``mwf``, ``fa``, ``mk``, ``qpm``, optionally ``qsm``, ``mtsat``, ``chi_dia``, ``reference`` (the measured
    reference MWF map, the target; fraction or percent, detected), optionally ``mask`` and ``wm`` (a
    white-matter mask or probability map; default: the whole mask). Paths are NIfTI files on one grid per
    subject (relative paths are read from the table's folder).
    """
    from pathlib import Path

    import pandas as pd

    from napari_myelin.fusion.inputs import check_grids, detect_mwf_unit
    from napari_myelin.io.volume import load_volume

    table_path = Path(table)
    if not table_path.exists():
        raise InputError(f"{table}: cohort table not found; give a TSV with subject, mwf, fa, mk, qpm, reference columns.")
    df = pd.read_csv(table_path, sep="\t" if table_path.suffix == ".tsv" else ",")
    need = {"subject", "mwf", "fa", "mk", "qpm", "reference"}
    if not need <= set(df.columns):
        raise InputError(f"{table}: missing columns {sorted(need - set(df.columns))}; see napari-myelin train-fusion --help.")
    base = table_path.parent

    def _load(p):
        p = Path(str(p))
        return load_volume(p if p.is_absolute() else base / p)

    subjects = []
    for _, row in df.iterrows():
        chans = ["mwf", "fa", "mk", "qpm"] + [c for c in ("qsm", "mtsat", "chi_dia")
                                               if c in df.columns and isinstance(row[c], str)]
        vols = {c: _load(row[c]) for c in chans}
        ref = _load(row["reference"])
        extra = {"reference": ref}
        if "mask" in df.columns and isinstance(row["mask"], str):
            extra["mask"] = _load(row["mask"])
        if "wm" in df.columns and isinstance(row["wm"], str):
            extra["wm"] = _load(row["wm"])
        check_grids({**vols, **extra})
        inputs = {c: np.nan_to_num(np.asarray(v.data, np.float32)) for c, v in vols.items()}
        mask = np.asarray(extra["mask"].data) > 0.5 if "mask" in extra else inputs["fa"] > 0
        if detect_mwf_unit(inputs["mwf"], mask) == "percent":
            inputs["mwf"] = inputs["mwf"] / 100.0
        target = np.nan_to_num(np.asarray(ref.data, np.float32))
        if detect_mwf_unit(target, mask) == "percent":
            target = target / 100.0
        wm = (np.asarray(extra["wm"].data) > wm_threshold) & mask if "wm" in extra else mask.copy()
        subjects.append(FusionSubject(inputs={c: np.where(mask, a, 0.0).astype(np.float32) for c, a in inputs.items()},
                                      target=target, mask=mask, wm=wm, name=str(row["subject"]),
                                      affine=vols["mwf"].affine,
                                      meta={"voxel_size_mm": vols["mwf"].zooms.tolist()}))
    if len({s.name for s in subjects}) != len(subjects):
        raise InputError(f"{table}: subject names repeat; give each subject one row.")
    return subjects


def split_by_subject(subjects: Sequence[FusionSubject], val_fraction: float = 0.2, seed: int = 0):
    """Deterministic split into training and validation subjects (never a subject on both sides)."""
    if len(subjects) < 2:
        raise InputError("cohort: at least 2 subjects are needed (one for training, one for validation).")
    order = np.random.default_rng(seed).permutation(len(subjects))
    n_val = min(len(subjects) - 1, max(1, round(val_fraction * len(subjects))))
    val = [subjects[i] for i in sorted(order[:n_val])]
    train = [subjects[i] for i in sorted(order[n_val:])]
    return train, val

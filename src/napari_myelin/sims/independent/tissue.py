"""The four tissue classes of every acquired voxel and their water pools.

Classes (axis of length 4, in this order): normal-appearing white matter (``NAWM``), lesion
(``LESION``), grey matter (``GM``, cortex and deep nuclei) and ``CSF``. :func:`classes_on_grid`
samples the class fractions (box average, so partial volume mixes classes) and the class
properties of :mod:`.anatomy` onto an acquisition grid, for the voxels inside the brain, and
attaches the subject's relaxation parameters:

* water content ``pd`` (NAWM ``pd_wm``, lesion ``pd_wm + dPD s``, GM ``pd_gm``, CSF 1);
* myelin-water fraction of the class water ``mwf`` (lesion: ``mwf_wm (1 - s)``, ``s`` the lesion's
  severity; CSF 0);
* median T2 of the myelin and intra/extra-cellular (IE) pools and their log-normal widths (lesion IE
  T2 ``t2_ie_wm (1 + (F_T2 - 1) s)``); CSF one narrow pool;
* T1 of the pools (lesion IE T1 ``t1_ie_wm (1 + (F_T1 - 1) s)``) and the class T1 in the
  fast-exchange limit ``1/T1 = mwf/T1_m + (1 - mwf)/T1_ie`` (McConnell 1958).

``F_T2``, ``F_T1`` and ``dPD`` are the subject's "full demyelination" changes, drawn from
:data:`.constants.LESION_T2_FACTOR`, ``LESION_T1_FACTOR`` and ``LESION_PD_INCREASE`` [Lau04].
"""

from __future__ import annotations

import numpy as np

from napari_myelin.sims.independent.constants import LESION_PD_INCREASE, LESION_T1_FACTOR, LESION_T2_FACTOR
from napari_myelin.sims.independent.geometry import Sampler

NAWM, LESION, GM, CSF = range(4)
#: Gauss-Hermite nodes per log-normal pool.
N_NODES = 5


def lesion_changes(rng: np.random.Generator) -> dict:
    """The subject's full-demyelination changes of lesion IE T2, IE T1 and water content."""
    return {"lesion_t2_factor": float(rng.uniform(*LESION_T2_FACTOR)),
            "lesion_t1_factor": float(rng.uniform(*LESION_T1_FACTOR)),
            "lesion_pd_increase": float(rng.uniform(*LESION_PD_INCREASE))}


def classes_on_grid(anatomy: dict, sampler: Sampler, tissue: dict, threshold: float = 0.02) -> dict:
    """Class fractions and pool parameters of the voxels of a grid whose brain fraction exceeds ``threshold``.

    Returns
    -------
    dict
        ``inside`` (bool, grid shape), ``brain`` (grid), and for the ``N`` inside voxels: ``f`` (N, 4)
        volume fractions, ``pd`` (N, 4), ``mwf`` (N, 4), ``t2_my`` (scalar s), ``t2_ie`` (N, 4; CSF:
        its T2), ``t1_my`` (scalar), ``t1_ie`` (N, 4; CSF: its T1), ``t1_fast`` (N, 4) class T1 in fast
        exchange, ``sigma_my``, ``sigma_ie`` (scalars; CSF uses ``sigma_csf``), ``severity`` (N,).
    """
    brain = sampler.mean(anatomy["brain"])
    inside = brain > threshold
    pick = inside.ravel()

    def get(name):
        return sampler.mean(anatomy[name]).ravel()[pick]

    f = np.stack([get(k) for k in ("f_nawm", "f_les", "f_gm", "f_csf")], axis=1).astype(float)
    sev = get("severity").astype(float)
    tis = tissue
    ones = np.ones_like(sev)
    mwf_wm = get("mwf_wm").astype(float)
    mwf = np.stack([mwf_wm, mwf_wm * (1 - sev), get("mwf_gm").astype(float), 0 * ones], axis=1)
    pd = np.stack([tis["pd_wm"] * ones, tis["pd_wm"] + tis["lesion_pd_increase"] * sev, tis["pd_gm"] * ones,
                   ones], axis=1)
    t2_ie = np.stack([tis["t2_ie_wm"] * ones, tis["t2_ie_wm"] * (1 + (tis["lesion_t2_factor"] - 1) * sev),
                      tis["t2_ie_gm"] * ones, tis["t2_csf"] * ones], axis=1)
    t1_ie = np.stack([tis["t1_ie_wm"] * ones, tis["t1_ie_wm"] * (1 + (tis["lesion_t1_factor"] - 1) * sev),
                      tis["t1_ie_gm"] * ones, tis["t1_csf"] * ones], axis=1)
    t1_fast = 1.0 / (mwf / tis["t1_myelin"] + (1 - mwf) / t1_ie)
    return {"inside": inside, "brain": brain, "f": f, "pd": pd, "mwf": mwf, "t2_my": tis["t2_myelin"],
            "t2_ie": t2_ie, "t1_my": tis["t1_myelin"], "t1_ie": t1_ie, "t1_fast": t1_fast,
            "sigma_my": tis["sigma_myelin"], "sigma_ie": tis["sigma_ie"], "sigma_csf": tis["sigma_csf"],
            "severity": sev}


def water(cl: dict) -> np.ndarray:
    """Water of each class in each voxel, ``f pd`` (N, 4) (fraction of a voxel of pure water)."""
    return cl["f"] * cl["pd"]


def true_mwf(cl: dict) -> np.ndarray:
    """Myelin water over all the water of the voxel (N,): ``sum_c f pd mwf / sum_c f pd``."""
    w = water(cl)
    tot = w.sum(axis=1)
    return np.divide((w * cl["mwf"]).sum(axis=1), tot, out=np.zeros_like(tot), where=tot > 0)


def lognormal_nodes(median, sigma) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes ``median exp(sqrt(2) sigma x_j)`` (..., N_NODES) and weights (sum 1) of a
    log-normal distribution with the given median and standard deviation of the log."""
    x, w = np.polynomial.hermite.hermgauss(N_NODES)
    nodes = np.asarray(median, float)[..., None] * np.exp(np.sqrt(2.0) * np.asarray(sigma, float)[..., None] * x)
    return nodes, w / np.sqrt(np.pi)


def t2_weight(median, sigma, te: float) -> np.ndarray:
    """Mean of ``exp(-TE/T2)`` over a log-normal T2 pool (e.g. the IE water at a diffusion echo time)."""
    nodes, w = lognormal_nodes(median, sigma)
    return (np.exp(-te / nodes) * w).sum(axis=-1)


def spin_echo_r2(cl: dict) -> np.ndarray:
    """Spin-echo R2 (1/s) of the voxel's water (N,): ``exp(-<ln T2>)``, the mean of ``ln T2`` over the
    myelin, IE and CSF pools weighted by their water (the medians of the log-normal pools are their
    geometric means), i.e. the inverse geometric-mean T2 of the voxel's T2 distribution, as a
    multi-component T2 fit reports it (0 outside the brain)."""
    w = water(cl)
    my = w * cl["mwf"]
    log_t2 = (my * np.log(cl["t2_my"])).sum(1) + ((w - my) * np.log(cl["t2_ie"])).sum(1)
    tot = w.sum(1)
    return np.where(tot > 0, np.exp(-np.divide(log_t2, tot, out=np.zeros_like(tot), where=tot > 0)), 0.0)

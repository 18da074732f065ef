"""Anatomy and tissue properties on the model grid (template space).

:func:`_anatomy` reads the shipped atlas (:mod:`napari_myelin.align.atlas`: MNI ICBM152 tissue
probabilities and brain mask, HCP842-derived tract labels and fibre directions) onto the model grid
(2 mm for ``size="full"``, 4 mm for ``"small"``) and adds the iron-rich deep grey matter and the veins;
it is seed-independent and cached. :func:`_model` draws one subject's tissue from it: per-tract
myelin-water fractions, optional lesions and NAWM demyelination, then the water pools, relaxation
times, susceptibility, R2* and diffusion compartment fractions of every voxel (values in
:mod:`.constants`).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi

from napari_myelin.align import atlas
from napari_myelin.io.volume import Volume
from napari_myelin.sims.phantom.constants import (CHI, DEEP_GM, MWF_DEEP_GM, MWF_GM, MWF_WM_DEFAULT, PD, SIZES, T1,
                                                  T2, TRACT_MWF, VEINS)
from napari_myelin.sims.phantom.geometry import _world_coords


def _downsample(vol: Volume, factor: int, kind: str) -> Volume:
    """Block-average (``kind="mean"``) or block-centre (``"nearest"``) downsampling by ``factor``, padded."""
    if factor == 1:
        return vol
    data = vol.data
    pad = [(0, (-n) % factor) for n in data.shape[:3]] + [(0, 0)] * (data.ndim - 3)
    data = np.pad(data, pad)
    if kind == "mean":
        x, y, z = (n // factor for n in data.shape[:3])
        out = data.reshape(x, factor, y, factor, z, factor, *data.shape[3:]).mean(axis=(1, 3, 5))
    else:  # nearest: the voxel nearest to the block centre
        out = data[factor // 2::factor, factor // 2::factor, factor // 2::factor]
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, :3] * factor
    aff[:3, 3] = vol.affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + vol.affine[:3, 3]
    return Volume(out, aff, None, dict(vol.metadata), None)



def _ellipsoid(world: np.ndarray, centre, semi, soft: float = 1.0) -> np.ndarray:
    """Soft ellipsoid indicator (1 inside, 0 outside, linear ramp of ~``2 soft`` mm at the surface)."""
    d = np.sqrt((((world - np.asarray(centre, float)[:, None]) / np.asarray(semi, float)[:, None]) ** 2).sum(0))
    r = np.min(semi)
    return np.clip(0.5 - (d - 1.0) * r / (2 * soft), 0.0, 1.0)


def _segment_distance(world: np.ndarray, a, b) -> np.ndarray:
    """Distance (mm) of the points ``world`` (3, N) to the segment ``a``-``b``."""
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[:, None]
    ab = b - a
    t = np.clip(((world - a) * ab).sum(0) / (ab * ab).sum(), 0, 1)
    return np.linalg.norm(world - (a + ab * t), axis=0)



# --------------------------------------------------------------------------------------------------
# seed-independent anatomy
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _anatomy(size: str) -> dict:
    """Seed-independent anatomy on the model grid (cached; arrays are read-only)."""
    factor = SIZES[size]["model_mm"] // 2
    out = _tissues(factor)
    out.update(_tracts(factor))
    out["world"] = _world_coords(out["affine"], out["shape"])
    out.update(_deep_gm_and_veins(out["world"], out["shape"], out["brain"], SIZES[size]["model_mm"]))
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return out


def _tissues(factor: int) -> dict:
    """WM and GM fractions (sum <= 1 inside the brain), CSF = brain - WM - GM, brain fraction."""
    wm = _downsample(atlas.load_tissue_probability("wm", 2), factor, "mean")
    gm = _downsample(atlas.load_tissue_probability("gm", 2), factor, "mean").data
    brain_vol = atlas.load_brain_mask(2)
    brain_vol.data = brain_vol.data.astype(np.float32)
    brain = _downsample(brain_vol, factor, "mean").data
    affine = wm.affine
    shape = wm.shape
    wm = wm.data
    brain = np.clip(brain, 0, 1)
    wm, gm = wm * (brain > 0), gm * (brain > 0)
    tot = np.maximum(wm + gm, 1.0)
    wm, gm = wm / tot, gm / tot
    csf = np.clip(brain - wm - gm, 0, 1)
    return dict(affine=affine, shape=shape, wm=wm, gm=gm, csf=csf, brain=brain)


def _tracts(factor: int) -> dict:
    """Tract labels, their LUT, and the label and unit fibre direction of the nearest labelled voxel."""
    labels_vol, lut = atlas.load_tract_atlas(2)
    # nearest sampling takes the voxel at block index factor//2 (within 1 mm of the block centre)
    labels = _downsample(labels_vol, factor, "nearest").data.astype(np.int32)
    dirs = _downsample(atlas.load_fibre_direction(), factor, "nearest").data
    # every voxel takes the label and fibre direction of the nearest labelled voxel (for WM outside labels)
    _, near = ndi.distance_transform_edt(labels == 0, return_indices=True)
    nearest_label = labels[tuple(near)]
    fibre = dirs[tuple(near)]
    fibre = fibre / np.maximum(np.linalg.norm(fibre, axis=-1, keepdims=True), 1e-6)
    return dict(lut=lut, labels=labels, nearest_label=nearest_label, fibre=fibre.astype(np.float32))


def _deep_gm_and_veins(world: np.ndarray, shape, brain: np.ndarray, model_mm: float) -> dict:
    """Deep grey matter (soft ellipsoids, both sides) with its iron susceptibility, and the veins."""
    deep = np.zeros(shape, np.float32)
    chi_iron = np.zeros(shape, np.float32)
    for _, centre, semi, chi in DEEP_GM:
        for sx in (-1, 1):
            e = _ellipsoid(world, (sx * centre[0], centre[1], centre[2]), semi).reshape(shape)
            deep = np.maximum(deep, e)
            chi_iron = np.maximum(chi_iron, chi * e)
    deep *= brain > 0
    chi_iron *= brain > 0
    vein = np.zeros(shape, np.float32)
    for a, b, r in VEINS:
        d = _segment_distance(world, a, b).reshape(shape)
        vein = np.maximum(vein, np.clip(0.5 - (d - r) / (model_mm), 0, 1))
    vein *= brain > 0
    return dict(deep=deep, chi_iron=chi_iron, vein=vein)


# --------------------------------------------------------------------------------------------------
# one subject's tissue
# --------------------------------------------------------------------------------------------------
def _model(size: str, rng: np.random.Generator, lesions: bool, nawm_reduction: float) -> dict:
    """Property maps on the model grid (template space). Returns a dict of arrays + 'affine'."""
    an = _anatomy(size)
    lut = an["lut"].copy()
    mwf_wm, per_tract = _tract_mwf(lut, an["nearest_label"], rng)
    lesion, nawm = _pathology(an, lut, SIZES[size]["model_mm"], rng, lesions)
    myelin_scale = (1 - 0.8 * lesion) * (1 - nawm_reduction * nawm)
    mwf_wm = mwf_wm * myelin_scale
    return {
        "affine": an["affine"], "shape": an["shape"], "lut": lut, "brain": an["brain"].astype(np.float32),
        "wm": an["wm"], "gm": an["gm"], "csf": an["csf"], "labels": an["labels"],
        "fibre": an["fibre"].astype(np.float32),
        **_water_pools(an, mwf_wm, lesion, nawm),
        **_susceptibility(an, mwf_wm),
        "lesion": lesion, "nawm_demyelination": nawm, "deep_gm": an["deep"], "vein": an["vein"],
        "tract_mwf": dict(zip(lut["abbreviation"], np.round(per_tract, 4).tolist())),
    }


def _tract_mwf(lut, nearest_label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """WM myelin-water fraction map and the per-tract values drawn (+-5 % per tract and subject).

    WM outside the labels takes the nearest label's value.
    """
    abbr = lut["abbreviation"].str.replace(r"_[LR]$", "", regex=True)
    per_tract = np.array([TRACT_MWF.get(a, MWF_WM_DEFAULT) for a in abbr]) * (1 + 0.05 * rng.standard_normal(len(lut)))
    table = np.full(int(lut["index"].max()) + 1, MWF_WM_DEFAULT)
    table[lut["index"].to_numpy()] = per_tract
    return table[nearest_label], per_tract


def _pathology(an: dict, lut, model_mm: float, rng: np.random.Generator,
               lesions: bool) -> tuple[np.ndarray, np.ndarray]:
    """Lesion and NAWM-demyelination weights (0-1); zero unless ``lesions``.

    Five periventricular ellipsoidal lesions in deep WM, and one large tract (random side) of
    normal-appearing WM, smoothed, outside the lesions.
    """
    wm, gm, labels, world, shape = an["wm"], an["gm"], an["labels"], an["world"], an["shape"]
    lesion = np.zeros(shape, np.float32)
    nawm = np.zeros(shape, np.float32)
    if lesions:
        cand = np.flatnonzero((wm > 0.9).ravel() & (np.abs(world[0]) < 32) & (world[1] > -40) & (world[1] < 25)
                              & (world[2] > 5) & (world[2] < 35))
        n_les = 5
        for c in rng.choice(cand, size=min(n_les, cand.size), replace=False):
            semi = rng.uniform(4, 8, 3) * max(1.0, model_mm / 3)
            lesion = np.maximum(lesion, _ellipsoid(world, world[:, c], semi, soft=2.0).reshape(shape))
        lesion *= (wm + gm) > 0.3
        big = ["CST", "SLF", "ILF", "IFOF", "OR", "CT", "AF"]
        pick = rng.choice(big)
        side = rng.choice(["L", "R"])
        idx = lut.loc[lut["abbreviation"] == f"{pick}_{side}", "index"].to_numpy()
        nawm = ndi.gaussian_filter(np.isin(labels, idx).astype(np.float32), 0.7) * (wm > 0.3)
        nawm = np.clip(nawm * 2, 0, 1) * (1 - lesion)
    return lesion, nawm


def _water_pools(an: dict, mwf_wm: np.ndarray, lesion: np.ndarray, nawm: np.ndarray) -> dict:
    """Water pools (fractions of the voxel's water), proton density, relaxation, diffusion fractions."""
    wm, gm, csf, deep = an["wm"], an["gm"], an["csf"], an["deep"]
    mwf_gm = MWF_GM + (MWF_DEEP_GM - MWF_GM) * deep
    pd_wm = PD["wm"] * (1 + 0.08 * lesion)
    # water of each pool (fraction of a voxel of pure water)
    w_my = wm * pd_wm * mwf_wm + gm * PD["gm"] * mwf_gm
    w_ie = wm * pd_wm * (1 - mwf_wm) + gm * PD["gm"] * (1 - mwf_gm)
    w_csf = csf * PD["csf"]
    pd = w_my + w_ie + w_csf
    safe = np.where(pd > 0, pd, 1.0)
    f_my, f_ie, f_csf = w_my / safe, w_ie / safe, w_csf / safe
    ie_wm = wm * pd_wm * (1 - mwf_wm)
    ie_gm = gm * PD["gm"] * (1 - mwf_gm)
    share = ie_wm / np.where(w_ie > 0, w_ie, 1.0)
    t2_wm = T2["ie_wm"] * (1 + 0.02 * nawm) + (0.110 - T2["ie_wm"]) * lesion
    t2_ie = share * t2_wm + (1 - share) * T2["ie_gm"]
    t1_ie = share * T1["ie_wm"] * (1 + 0.2 * lesion) + (1 - share) * T1["ie_gm"]
    r1 = f_my / T1["my"] + f_ie / np.where(t1_ie > 0, t1_ie, 1.0) + f_csf / T1["csf"]
    t1 = np.where(r1 > 0, 1.0 / np.where(r1 > 0, r1, 1.0), 0.0)  # fast exchange: water-weighted R1
    # diffusion compartments (non-myelin water)
    axon = np.clip(0.45 + 2.0 * (mwf_wm - 0.10), 0.2, 0.7)
    diff_w = ie_wm / np.where(w_ie + w_csf > 0, w_ie + w_csf, 1.0)
    diff_g = ie_gm / np.where(w_ie + w_csf > 0, w_ie + w_csf, 1.0)
    diff_c = 1.0 - diff_w - diff_g
    return {
        "mwf": f_my, "f_ie": f_ie, "f_csf": f_csf, "pd": pd, "t2_ie": t2_ie, "t1_ie": t1_ie, "t1": t1,
        "tissue_mwf": f_my / np.where(f_my + f_ie > 0, f_my + f_ie, 1.0),
        "axon": axon, "diff_w": diff_w, "diff_g": diff_g, "diff_c": diff_c,
    }


def _susceptibility(an: dict, mwf_wm: np.ndarray) -> dict:
    """Susceptibility (ppm, CSF = 0: myelin, cortical GM, deep-GM iron, veins), its paramagnetic and
    diamagnetic parts and R2* (1/s).

    ``chi_para`` (>= 0) gathers the paramagnetic sources (cortical GM, deep-GM iron, venous blood) and
    ``chi_dia`` (>= 0, the magnitude of the diamagnetic susceptibility, chi-separation's convention) the
    myelin of white matter, so that ``chi = chi_para - chi_dia``: each term of ``chi`` belongs to one
    source, with no new draw (the chi-separation truth).
    """
    wm, gm, csf, deep, chi_iron, vein = an["wm"], an["gm"], an["csf"], an["deep"], an["chi_iron"], an["vein"]
    chi = (wm * CHI["wm_per_mwf"] * mwf_wm + gm * CHI["gm"] * (1 - deep) + chi_iron + CHI["vein"] * vein)
    chi_para = gm * CHI["gm"] * (1 - deep) + chi_iron + CHI["vein"] * vein
    chi_dia = -(wm * CHI["wm_per_mwf"] * mwf_wm)
    r2s = wm * (20.0 + 60 * (mwf_wm - 0.10)) + gm * (15.0 + 200 * chi_iron) + csf * 2.0 + 10 * vein
    return {"chi": chi, "chi_para": chi_para, "chi_dia": chi_dia, "r2s": r2s}

"""One subject's anatomy in template space (2 mm MNI grid): tissue classes and their properties.

The shipped atlas (:mod:`napari_myelin.align.atlas`: ICBM152 WM/GM probabilities and brain mask,
HCP842-derived tract labels and fibre directions) gives the healthy template. Each subject then
differs from it, beyond the warp of :mod:`.geometry`, by draws from ``rng`` (in this order):

1. **tissue parameters**: every range of :data:`.constants.TISSUE_RANGES`;
2. **tract properties**: myelin-water fraction from the population means of
   :data:`.constants.TRACT_MWF_POPULATION` times a subject factor and a per-tract factor (log-normal),
   orientation dispersion per tract group, intra-axonal fraction coupled to the tract MWF;
3. **deep grey nuclei** (jittered centres and sizes, iron susceptibility per nucleus) and **veins**
   (deep veins plus random medullary veins);
4. **atrophy**: tissue lost around the lateral ventricles and at the cortical surface;
5. **pathology** (with probability :data:`.constants.LESION_PROBABILITY`): lesions at random WM
   positions, random size, shape and severity, a global NAWM MWF deficit and 0-2 tracts with an
   extra deficit.

Every voxel is a mixture of four classes with fractions summing to the brain fraction: normal-appearing
white matter (``f_nawm``), lesion (``f_les``), grey matter (``f_gm``, cortex and deep nuclei) and CSF
(``f_csf``). Class properties are maps defined everywhere (WM properties are carried to every voxel
from the nearest labelled tract), so sampling them never mixes in zeros; the acquisitions mix the
*signals* of the classes by their fractions.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi

from napari_myelin.align import atlas
from napari_myelin.sims.independent.constants import (CORTICAL_THINNING_MM, DEEP_NUCLEI, DEEP_VEINS, F_AXON_CLIP,
                                                      F_AXON_MEAN, F_AXON_SD, F_AXON_SLOPE, LESION_COUNT_MEAN,
                                                      LESION_PROBABILITY, LESION_RADIUS, LESION_SEVERITY,
                                                      MWF_GLOBAL_SD, MWF_TRACT_SD, MWF_UNLABELLED, N_RANDOM_VEINS,
                                                      NAWM_GLOBAL_DEFICIT, NAWM_TRACT_DEFICIT, NAWM_TRACTS,
                                                      ODI_GROUPS, RANDOM_VEIN_LENGTH, RANDOM_VEIN_RADIUS,
                                                      TISSUE_RANGES, TRACT_MWF_POPULATION, VENTRICLE_GROWTH_MM)
from napari_myelin.sims.independent.geometry import rotation_matrix, voxel_centres

VOXEL_MM = 2.0


@functools.lru_cache(maxsize=1)
def template() -> dict:
    """Seed-independent template maps on the 2 mm atlas grid (cached, read-only)."""
    brain_vol = atlas.load_brain_mask(2)
    brain = brain_vol.data.astype(np.float32)
    wm = atlas.load_tissue_probability("wm", 2).data * brain
    gm = atlas.load_tissue_probability("gm", 2).data * brain
    total = np.maximum(wm + gm, 1.0)
    wm, gm = wm / total, gm / total
    labels_vol, lut = atlas.load_tract_atlas(2)
    labels = labels_vol.data.astype(np.int32)
    _, near = ndi.distance_transform_edt(labels == 0, return_indices=True)
    fibre = atlas.load_fibre_direction().data[tuple(near)]
    smooth = ndi.gaussian_filter(brain, 2.0)
    radial = np.stack(np.gradient(smooth), axis=-1)
    radial /= np.maximum(np.linalg.norm(radial, axis=-1, keepdims=True), 1e-6)
    out = {
        "affine": brain_vol.affine, "shape": brain.shape, "lut": lut, "brain": brain, "wm": wm.astype(np.float32),
        "gm": gm.astype(np.float32), "labels": labels, "nearest_label": labels[tuple(near)],
        "fibre": fibre.astype(np.float32), "radial": radial.astype(np.float32),
        "world": voxel_centres(brain_vol.affine, brain.shape).astype(np.float32),
        "depth": ndi.distance_transform_edt(brain > 0.5, sampling=VOXEL_MM).astype(np.float32),
    }
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return out


def draw_tissue(rng: np.random.Generator) -> dict:
    """One value per entry of :data:`.constants.TISSUE_RANGES` (uniform, in the table's order)."""
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in TISSUE_RANGES.items()}


def _tract_tables(lut, rng: np.random.Generator) -> dict:
    """Per-label MWF, ODI and intra-axonal fraction (index = label; 0 = unlabelled WM)."""
    abbr = lut["abbreviation"].str.replace(r"_[LR]$", "", regex=True).to_numpy()
    n = int(lut["index"].max()) + 1
    idx = lut["index"].to_numpy()
    subject = np.exp(MWF_GLOBAL_SD * rng.standard_normal())
    mwf = np.full(n, MWF_UNLABELLED * subject)
    mwf[idx] = [TRACT_MWF_POPULATION.get(a, MWF_UNLABELLED) for a in abbr]
    mwf[idx] *= subject * np.exp(MWF_TRACT_SD * rng.standard_normal(idx.size))
    group_of = {a: rng_range for names, rng_range in ODI_GROUPS.values() for a in names}
    odi = np.full(n, np.mean(ODI_GROUPS["association"][1]))
    odi[idx] = [rng.uniform(*group_of.get(a, ODI_GROUPS["association"][1])) for a in abbr]
    f_axon = np.clip(F_AXON_MEAN + F_AXON_SLOPE * (mwf - 0.12) + F_AXON_SD * rng.standard_normal(n), *F_AXON_CLIP)
    return {"mwf": mwf, "odi": odi, "f_axon": f_axon, "subject_factor": float(subject)}


def _soft_ellipsoid(world: np.ndarray, centre, semi, rot: np.ndarray | None = None, edge: float = 1.0):
    """Weight 0-1 of an ellipsoid (logistic edge of ``edge`` mm) at the points ``world`` (3, N)."""
    d = world - np.asarray(centre, np.float32)[:, None]
    if rot is not None:
        d = rot.T.astype(np.float32) @ d
    rho = np.sqrt(((d / np.asarray(semi, np.float32)[:, None]) ** 2).sum(axis=0))
    return 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) * float(np.min(semi)) / edge, -50, 50)))


def _tube(world: np.ndarray, a, b, radius: float) -> np.ndarray:
    """Volume fraction of a vein of ``radius`` mm along the segment a-b: a Gaussian cross-section of
    the same area (width ``max(radius, 1 mm)``), so that thin veins keep their volume at 2 mm."""
    a, b = np.asarray(a, np.float32)[:, None], np.asarray(b, np.float32)[:, None]
    ab = b - a
    t = np.clip(((world - a) * ab).sum(0) / float((ab * ab).sum()), 0, 1)
    d2 = ((world - (a + ab * t)) ** 2).sum(0)
    s = max(radius, 1.0)
    return (radius ** 2 / (2 * s ** 2)) * np.exp(-0.5 * d2 / s ** 2)


def _deep_grey(t: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Deep-nuclei weight and iron susceptibility (ppm), both sides, jittered per subject."""
    world, shape = t["world"], t["shape"]
    deep = np.zeros(shape, np.float32)
    iron = np.zeros(shape, np.float32)
    for _, centre, semi, chi_range in DEEP_NUCLEI:
        chi = rng.uniform(*chi_range)
        for side in (-1.0, 1.0):
            c = np.array([side * centre[0], centre[1], centre[2]]) + rng.uniform(-2, 2, 3)
            e = _soft_ellipsoid(world, c, np.asarray(semi) * rng.uniform(0.9, 1.1, 3)).reshape(shape)
            deep = np.maximum(deep, e)
            iron = np.maximum(iron, chi * e)
    return deep * t["brain"], iron * t["brain"]


def _veins(t: dict, rng: np.random.Generator) -> np.ndarray:
    """Vein volume fraction: the deep veins and a random number of medullary veins running inwards."""
    world, shape = t["world"], t["shape"]
    vein = np.zeros(world.shape[1], np.float32)
    for a, b, r in DEEP_VEINS:
        vein = np.maximum(vein, _tube(world, a, b, r))
    cortex = np.flatnonzero(((t["depth"] > 3) & (t["depth"] < 7) & (t["gm"] > 0.5)).ravel())
    radial = t["radial"].reshape(-1, 3)
    for start in rng.choice(cortex, size=int(rng.integers(N_RANDOM_VEINS[0], N_RANDOM_VEINS[1] + 1)),
                            replace=False):
        end = world[:, start] + radial[start] * rng.uniform(*RANDOM_VEIN_LENGTH)  # gradient points inwards
        vein = np.maximum(vein, _tube(world, world[:, start], end, RANDOM_VEIN_RADIUS))
    return vein.reshape(shape) * t["brain"]


def _atrophy(wm: np.ndarray, gm: np.ndarray, t: dict, rng: np.random.Generator) -> tuple:
    """Convert tissue to CSF around the lateral ventricles and at the cortical surface (soft, 2 mm ramps)."""
    grow, thin = rng.uniform(*VENTRICLE_GROWTH_MM), rng.uniform(*CORTICAL_THINNING_MM)
    x, y, z = (t["world"][i].reshape(t["shape"]) for i in range(3))
    csf0 = np.clip(t["brain"] - t["wm"] - t["gm"], 0, 1)
    box = (np.abs(x) < 30) & (y > -45) & (y < 35) & (z > -5) & (z < 35)
    lab, n = ndi.label((csf0 > 0.5) & box)
    sizes = ndi.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    ventricles = np.isin(lab, 1 + np.flatnonzero(sizes >= 20))
    dist = ndi.distance_transform_edt(~ventricles, sampling=VOXEL_MM)
    conv_v = np.clip((grow + 1.0 - dist) / 2.0, 0, 1) * (dist > 0)
    conv_c = np.clip((thin + 1.0 - t["depth"]) / 2.0, 0, 1) * (gm > wm)
    return wm * (1 - conv_v), gm * (1 - conv_v) * (1 - conv_c), {"ventricle_growth_mm": grow,
                                                                  "cortical_thinning_mm": thin}


def _lesions(t: dict, wm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """Lesion weight (0-1) and severity map (filled) of a random number of random lesions in WM."""
    world, shape = t["world"], t["shape"]
    weight = np.zeros(shape, np.float32)
    severity = np.zeros(shape, np.float32)
    cand = np.flatnonzero((wm > 0.8).ravel())
    found = []
    for c in rng.choice(cand, size=min(int(rng.poisson(LESION_COUNT_MEAN)), cand.size), replace=False):
        median, sd, clip = LESION_RADIUS
        radius = float(np.clip(median * np.exp(sd * rng.standard_normal()), *clip))
        semi = radius * rng.uniform(0.7, 1.3, 3)
        sev = rng.uniform(*LESION_SEVERITY)
        e = _soft_ellipsoid(world, world[:, c], semi, rotation_matrix(rng.uniform(-90, 90, 3))).reshape(shape)
        severity = np.where(e > weight, sev, severity)
        weight = np.maximum(weight, e)
        found.append({"centre_mm": world[:, c].round(1).tolist(), "radius_mm": round(radius, 2),
                      "severity": round(float(sev), 3)})
    weight *= (wm > 0.3)
    return weight, severity, found


def _nawm(t: dict, lut, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Relative MWF deficit of normal-appearing WM: a global part plus 0-2 tracts with an extra one."""
    glob = rng.uniform(*NAWM_GLOBAL_DEFICIT)
    deficit = np.full(t["shape"], glob, np.float32)
    tracts = []
    for _ in range(int(rng.integers(NAWM_TRACTS[0], NAWM_TRACTS[1] + 1))):
        row = lut.iloc[int(rng.integers(len(lut)))]
        extra = rng.uniform(*NAWM_TRACT_DEFICIT)
        mask = ndi.gaussian_filter((t["nearest_label"] == row["index"]).astype(np.float32), 1.0)
        deficit = 1 - (1 - deficit) * (1 - extra * np.clip(2 * mask, 0, 1))
        tracts.append({"tract": row["abbreviation"], "deficit": round(float(extra), 3)})
    return deficit, {"nawm_global_deficit": round(float(glob), 4), "nawm_tracts": tracts}


def draw_anatomy(rng: np.random.Generator) -> dict:
    """One subject's template-space maps and parameters (module docstring; draws in that order).

    Returns
    -------
    dict
        Maps on the 2 mm template grid: class fractions ``f_nawm``, ``f_les``, ``f_gm``, ``f_csf``,
        ``brain``; WM class ``mwf_wm`` (NAWM, deficits applied), ``severity`` (lesion myelin loss),
        ``odi_wm``, ``f_axon``, ``fibre`` (template RAS unit vectors), ``labels``; GM class
        ``mwf_gm``, ``chi_gm`` (ppm), ``deep``, ``radial``; ``vein`` (volume fraction), ``lesion``
        (weight) and ``nawm`` (relative deficit); plus ``affine``, ``lut``, ``tissue`` (scalars) and
        ``parameters`` (what was drawn).
    """
    t = template()
    tissue = draw_tissue(rng)
    tables = _tract_tables(t["lut"], rng)
    deep, iron = _deep_grey(t, rng)
    vein = _veins(t, rng)
    wm, gm = t["wm"] * (1 - deep), t["gm"] + t["wm"] * deep
    wm, gm, atrophy = _atrophy(wm, gm, t, rng)
    has_lesions = bool(rng.uniform() < LESION_PROBABILITY)
    lesion = severity = np.zeros(t["shape"], np.float32)
    nawm, les_list, nawm_par = np.zeros(t["shape"], np.float32), [], {"nawm_global_deficit": 0.0, "nawm_tracts": []}
    if has_lesions:
        lesion, severity, les_list = _lesions(t, wm, rng)
        nawm, nawm_par = _nawm(t, t["lut"], rng)
    near = t["nearest_label"]
    csf = np.clip(t["brain"] - wm - gm, 0, 1)
    maps = {
        "f_nawm": wm * (1 - lesion), "f_les": wm * lesion, "f_gm": gm, "f_csf": csf, "brain": t["brain"],
        "mwf_wm": tables["mwf"][near] * (1 - nawm), "severity": severity, "odi_wm": tables["odi"][near],
        "f_axon": tables["f_axon"][near], "fibre": t["fibre"], "labels": t["labels"],
        "mwf_gm": tissue["mwf_cortex"] + (tissue["mwf_deep_gm"] - tissue["mwf_cortex"]) * deep,
        "chi_gm": tissue["chi_cortex"] * (1 - deep) + iron, "deep": deep, "radial": t["radial"], "vein": vein,
        "lesion": lesion, "nawm": nawm,
    }
    maps = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in maps.items()}
    lut = t["lut"]
    parameters = {
        "tissue": {k: round(v, 5) for k, v in tissue.items()}, **atrophy, "lesions": les_list, **nawm_par,
        "has_lesions": has_lesions, "mwf_subject_factor": round(tables["subject_factor"], 4),
        "tract_mwf": dict(zip(lut["abbreviation"], np.round(tables["mwf"][lut["index"].to_numpy()], 4).tolist())),
        "tract_odi": dict(zip(lut["abbreviation"], np.round(tables["odi"][lut["index"].to_numpy()], 4).tolist())),
    }
    return {**maps, "affine": t["affine"], "lut": lut, "tissue": tissue, "parameters": parameters}

#!/usr/bin/env python
"""Build the atlas files shipped in ``src/napari_myelin/data/atlas/`` (run once; outputs are committed).

Sources (see ``NOTICE.md``, copied beside the outputs): the MNI ICBM152 2009a nonlinear symmetric
T1 template and grey/white-matter probability maps (1 mm, 197 x 233 x 189, brain-extracted), and
the HCP842 population-averaged tractography atlas (80 overlapping binary tract masks in ICBM152
space, 1 mm, on its own grid).

What it writes
--------------
``mni_t1_{1,2}mm.nii.gz``
    T1-weighted template (uint8, 0-255 as distributed). 2 mm = mean of 2x2x2 blocks.
``mni_wm_2mm.nii.gz``, ``mni_gm_2mm.nii.gz``
    Tissue probability maps, uint8 with NIfTI scale slope 1/255 so readers get probabilities 0-1
    (2 mm only, to keep the package small; the 1 mm label map uses the 1 mm source maps).
``mni_brain_{1,2}mm.nii.gz``
    Brain mask (T1 template > 0, holes filled); the CSF probability is ``brain * (1 - wm - gm)``,
    computed at load time.
``hcp842_tracts_{1,2}mm.nii.gz`` + ``hcp842_tracts.tsv``
    White-matter tract label map on the template grids and its lookup table
    (``index``, ``name``, ``abbreviation``, ``hemisphere``).
``hcp842_direction_2mm.nii.gz``
    Unit fibre direction per labelled voxel (world RAS axes, int8 scaled by 127), used by the
    phantom to orient its diffusion tensors.

Rules of the label map
----------------------
1. Every tract mask is resampled onto the 1 mm template grid by world coordinates (nearest
   neighbour: both grids are 1 mm and differ by axis flips and integer shifts).
2. Cranial nerves (``CN*``) are dropped.
3. A white-matter voxel (WM probability >= 0.5) gets the *smallest* tract (fewest voxels in the
   source atlas) that covers it: the most specific label wins where tracts overlap. WM voxels no
   tract covers stay 0 (unlabelled white matter).
4. The corpus callosum is split along the anterior-posterior (MNI y) axis with the Witelson (1989)
   scheme, measured on the midline extent of the callosal mask (|x| <= 2 mm): the anterior third
   is the **genu** (with the rostrum), the posterior fifth the **splenium**, the rest the **body**;
   the cut planes apply to the whole callosal mask (lateral radiations included).
5. Left/right tracts keep separate labels (``hemisphere`` L/R); midline tracts are ``M``.
6. The 2 mm label of a 2x2x2 block is the most frequent non-zero 1 mm label in it, kept where the
   2 mm WM probability is >= 0.5.

Fibre direction (2 mm)
----------------------
For each tract, the local second moment (covariance) of its binary mask within a Gaussian window
(sigma 6 mm) is computed with Gaussian filters; its principal eigenvector is the direction along
which the tract locally extends, taken as the fibre direction in the voxels carrying that label
(a documented approximation: sheet-like regions and crossings get the dominant extension). The
callosal body is a sheet whose local extension is ambiguous: its fibres are set to left-right.

Usage::

    python scripts/build_atlas.py /work/shared/data/atlas src/napari_myelin/data/atlas

References
----------
Fonov V et al., NeuroImage 54:313 (2011); 47:S102 (2009).
Yeh F-C et al., NeuroImage 178:57 (2018).
Witelson SF, Brain 112:799 (1989).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
TRACTS = "HCP842_tractography.nii.gz"

ABBREVIATIONS = {
    "Acoustic_Radiation": "AR", "Cortico_Striatal_Pathway": "CS", "Cortico_Spinal_Tract": "CST",
    "Corticothalamic_Pathway": "CT", "Fornix": "FX", "Frontopontine_Tract": "FPT",
    "Occipitopontine_Tract": "OPT", "Optic_Radiation": "OR", "Parietopontine_Tract": "PPT",
    "Temporopontine_Tract": "TPT", "Arcuate_Fasciculus": "AF", "Cingulum": "C", "Extreme_Capsule": "EMC",
    "Frontal_Aslant_Tract": "FAT", "Inferior_Fronto_Occipital_Fasciculus": "IFOF",
    "Inferior_Longitudinal_Fasciculus": "ILF", "Middle_Longitudinal_Fasciculus": "MdLF",
    "Superior_Longitudinal_Fasciculus": "SLF", "U_Fiber": "U", "Uncinate_Fasciculus": "UF",
    "Vertical_Occipital_Fasciculus": "VOF", "Anterior_Commissure": "AC", "Posterior_Commissure": "PC",
    "Cerebellum": "CB", "Inferior_Cerebellar_Peduncle": "ICP", "Middle_Cerebellar_Peduncle": "MCP",
    "Superior_Cerebellar_Peduncle": "SCP", "Vermis": "V", "Central_Tegmental_Tract": "CTT",
    "Dorsal_Longitudinal_Fasciculus": "DLF", "Lateral_Lemniscus": "LL", "Medial_Lemniscus": "ML",
    "Medial_Longitudinal_Fasciculus": "MLF", "Rubrospinal_Tract": "RST", "Spinothalamic_Tract": "STT",
}
CC_PARTS = (("Corpus Callosum genu", "GCC"), ("Corpus Callosum body", "BCC"), ("Corpus Callosum splenium", "SCC"))


def block_mean(a: np.ndarray) -> np.ndarray:
    """Mean of 2x2x2 blocks (array zero-padded to even sizes)."""
    pad = [(0, s % 2) for s in a.shape]
    a = np.pad(a.astype(np.float32), pad)
    x, y, z = (s // 2 for s in a.shape)
    return a.reshape(x, 2, y, 2, z, 2).mean(axis=(1, 3, 5))


def blocks(a: np.ndarray) -> np.ndarray:
    pad = [(0, s % 2) for s in a.shape]
    a = np.pad(a, pad)
    x, y, z = (s // 2 for s in a.shape)
    return a.reshape(x, 2, y, 2, z, 2).transpose(0, 2, 4, 1, 3, 5).reshape(x, y, z, 8)


def affine_2mm(aff1: np.ndarray) -> np.ndarray:
    aff = aff1.copy()
    aff[:3, :3] = aff1[:3, :3] * 2
    aff[:3, 3] = aff1[:3, :3] @ np.array([0.5, 0.5, 0.5]) + aff1[:3, 3]
    return aff


def save(arr: np.ndarray, affine: np.ndarray, path: Path, slope: float | None = None) -> None:
    img = nib.Nifti1Image(arr, affine)
    img.set_data_dtype(arr.dtype)
    img.set_qform(affine, code=4)  # MNI152
    img.set_sform(affine, code=4)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def tract_rows(names: list[str]) -> list[dict]:
    rows = []
    for k, raw in enumerate(names):
        name = raw.strip()
        if name.startswith("CN"):
            continue
        if name == "Corpus_Callosum":
            for part, abbr in CC_PARTS:
                rows.append({"source": k, "name": part, "abbreviation": abbr, "hemisphere": "M"})
            continue
        base, hemi = (name[:-2], name[-1]) if name.endswith(("_L", "_R")) else (name, "M")
        abbr = ABBREVIATIONS[base] + ("" if hemi == "M" else f"_{hemi}")
        pretty = base.replace("_", " ") + ("" if hemi == "M" else f" {hemi}")
        rows.append({"source": k, "name": pretty, "abbreviation": abbr, "hemisphere": hemi})
    for i, r in enumerate(rows, start=1):
        r["index"] = i
    return rows


def main(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    t1_img = nib.load(str(src / T1))
    aff1 = t1_img.affine
    aff2 = affine_2mm(aff1)
    t1 = np.asanyarray(t1_img.dataobj).astype(np.uint8)
    wm = np.asanyarray(nib.load(str(src / WM)).dataobj).astype(np.uint8)
    gm = np.asanyarray(nib.load(str(src / GM)).dataobj).astype(np.uint8)
    brain = ndi.binary_fill_holes(ndi.binary_closing(t1 > 0, iterations=2) | (t1 > 0))

    # templates, 1 mm and 2 mm
    for res, f in ((1, lambda a: a), (2, lambda a: np.round(block_mean(a)).astype(np.uint8))):
        aff = aff1 if res == 1 else aff2
        save(f(t1), aff, dst / f"mni_t1_{res}mm.nii.gz")
        if res == 2:  # 1 mm tissue maps are not shipped (size); atlas.py interpolates the 2 mm ones
            save(f(wm), aff, dst / f"mni_wm_{res}mm.nii.gz", slope=1 / 255)
            save(f(gm), aff, dst / f"mni_gm_{res}mm.nii.gz", slope=1 / 255)
    save(brain.astype(np.uint8), aff1, dst / "mni_brain_1mm.nii.gz")
    brain2 = block_mean(brain) >= 0.5
    save(brain2.astype(np.uint8), aff2, dst / "mni_brain_2mm.nii.gz")

    # tract masks on the template grid, by world coordinates
    timg = nib.load(str(src / TRACTS))
    names = (src / TRACTS.replace(".nii.gz", ".txt")).read_text().splitlines()
    names = [n.split("\t", 1)[1] if "\t" in n else n for n in names if n.strip()]
    tdata = np.asanyarray(timg.dataobj)
    ijk = np.indices(t1.shape).reshape(3, -1)
    world = aff1[:3, :3] @ ijk + aff1[:3, 3:4]
    src_ijk = np.linalg.inv(timg.affine)[:3, :3] @ world + np.linalg.inv(timg.affine)[:3, 3:4]
    src_ijk = np.rint(src_ijk).astype(int)
    inside = np.all((src_ijk >= 0) & (src_ijk < np.array(tdata.shape[:3])[:, None]), axis=0)

    def mask_on_template(k: int) -> np.ndarray:
        m = np.zeros(t1.size, bool)
        s = src_ijk[:, inside]
        m[inside] = tdata[s[0], s[1], s[2], k] > 0
        return m.reshape(t1.shape)

    rows = tract_rows(names)
    lut = pd.DataFrame(rows)
    sizes = {k: int((tdata[..., k] > 0).sum()) for k in set(lut["source"])}
    wm_mask = wm >= 128  # probability >= 0.5
    labels1 = np.zeros(t1.shape, np.int16)
    y_world = (aff1 @ np.r_[np.indices((1, t1.shape[1], 1)).reshape(3, -1), np.ones((1, t1.shape[1]))])[1]
    masks = {}
    for k in sorted(sizes, key=lambda k: -sizes[k]):  # largest first: smaller tracts overwrite
        m = mask_on_template(k)
        masks[k] = m
        sub = lut[lut["source"] == k]
        if len(sub) == 1:
            labels1[m & wm_mask] = sub["index"].iloc[0]
            continue
        # corpus callosum: Witelson thirds/fifths along y, measured at the midline
        x_world = aff1[0, 0] * np.arange(t1.shape[0]) + aff1[0, 3]
        mid = m[np.abs(x_world) <= 2].any(axis=(0, 2))
        y_mid = y_world[mid]
        y_min, y_max = y_mid.min(), y_mid.max()
        length = y_max - y_min
        genu_cut = y_max - length / 3
        splen_cut = y_min + length / 5
        print(f"corpus callosum midline y extent {y_min:.0f}..{y_max:.0f} mm; genu y > {genu_cut:.1f}, "
              f"splenium y < {splen_cut:.1f}")
        part = np.where(y_world > genu_cut, 0, np.where(y_world < splen_cut, 2, 1))[None, :, None]
        part = np.broadcast_to(part, t1.shape)
        idx = sub["index"].to_numpy()
        sel = m & wm_mask
        labels1[sel] = idx[part[sel]]
    save(labels1, aff1, dst / "hcp842_tracts_1mm.nii.gz")

    # 2 mm labels: most frequent non-zero 1 mm label of each block, where WM(2 mm) >= 0.5
    b = blocks(labels1)
    counts = np.stack([(b == i).sum(-1) for i in lut["index"]], axis=-1)
    labels2 = np.where(counts.max(-1) > 0, lut["index"].to_numpy()[counts.argmax(-1)], 0).astype(np.int16)
    labels2[block_mean(wm) < 127.5] = 0
    save(labels2, aff2, dst / "hcp842_tracts_2mm.nii.gz")

    # fibre direction per label at 2 mm: principal axis of the local covariance of the tract mask
    sigma = 3.0  # voxels of 2 mm
    shape2 = labels2.shape
    grid = np.indices(shape2).astype(np.float32)
    direction = np.zeros(shape2 + (3,), np.float32)
    for _, row in lut.iterrows():
        sel = labels2 == row["index"]
        if not sel.any():
            continue
        m = block_mean(masks[row["source"]]).astype(np.float32)
        if row["abbreviation"] == "BCC":  # a sheet: its fibres cross the midline left-right
            direction[sel] = (1.0, 0.0, 0.0)
            continue
        w = ndi.gaussian_filter(m, sigma)
        w_safe = np.where(w > 1e-6, w, 1.0)
        mean = [ndi.gaussian_filter(m * grid[i], sigma) / w_safe for i in range(3)]
        cov = np.zeros(shape2 + (3, 3), np.float32)
        for i in range(3):
            for j in range(i, 3):
                c = ndi.gaussian_filter(m * grid[i] * grid[j], sigma) / w_safe - mean[i] * mean[j]
                cov[..., i, j] = cov[..., j, i] = c
        _, vecs = np.linalg.eigh(cov[sel])
        v = vecs[..., -1] @ (aff2[:3, :3] / 2).T  # voxel axes -> world axes (2 mm grid)
        direction[sel] = v / np.linalg.norm(v, axis=-1, keepdims=True)
    save(np.round(direction * 127).astype(np.int8), aff2, dst / "hcp842_direction_2mm.nii.gz")

    out = lut[["index", "name", "abbreviation", "hemisphere"]]
    out.to_csv(dst / "hcp842_tracts.tsv", sep="\t", index=False)
    print(f"wrote {dst / 'hcp842_tracts.tsv'} ({len(out)} labels)")
    notice = (src / "NOTICE.md").read_text(encoding="utf-8")
    notice += (
        "\n## Files in this folder\n"
        "Derived from the sources above by `scripts/build_atlas.py` (see its docstring): the templates resampled "
        "to 2 mm (and the 1 mm T1), a brain mask, the HCP842-derived white-matter tract label map (1 and 2 mm) "
        "with its lookup table `hcp842_tracts.tsv`, and a 2 mm fibre-direction map. The label map and the "
        "direction map are shared under CC BY-SA 4.0 with the attribution above.\n"
    )
    (dst / "NOTICE.md").unlink(missing_ok=True)
    (dst / "NOTICE.md").write_text(notice, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/build_atlas.py SOURCE_DIR OUTPUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))

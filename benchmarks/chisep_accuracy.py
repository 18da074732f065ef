"""chi-separation accuracy: qsm-forward (QSM-CI) simulations and the project phantom; the docs' tables and figure.

Run: ``python benchmarks/chisep_accuracy.py [--figure docs/images/chisep.png]``. Prints Markdown:

1. qsm-forward's concentric-cylinder chi-separation phantom (its field and R2', Dr 137 Hz/ppm);
2. the qsm-forward head (tests/_chisep_head.py: the project's atlas anatomy, qsm-forward's per-tissue chi+ /
   chi-, field, chi-separation GRE and spin-echo signals, peak SNR 200): region means of chi_para and
   chi_dia through the whole chain (QSM with automatic mask and PDF; R2* and mono-exponential spin-echo R2)
   and with qsm-forward's own local field;
3. the project phantom (``make_phantom(seed=0, size="full", snr=200)``): correlation of chi_dia with the
   true MWF in white matter, with R2 from the mono-exponential fit of the MESE (the pipeline's choice) and
   from the geometric-mean T2 of the MWF fit; white-matter and corticospinal-tract means next to the
   published chi-separation atlas values;
4. timings (2-core container, shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from napari_myelin.io.resample import resample_like  # noqa: E402
from napari_myelin.io.volume import Volume  # noqa: E402
from napari_myelin.reconst.chisep import separate_susceptibility  # noqa: E402
from napari_myelin.reconst.decay import decay_rate  # noqa: E402
from napari_myelin.reconst.mwf import myelin_water  # noqa: E402
from napari_myelin.reconst.qsm import fit_qsm  # noqa: E402
from napari_myelin.sims.phantom import make_phantom  # noqa: E402
from napari_myelin.workflows.chisep import chi_separation, r2_on_gre, spin_echo_r2  # noqa: E402
from tests._chisep_head import IRON_NUCLEI, LABELS, make_chisep_head  # noqa: E402


def cylinders() -> list[str]:
    import qsm_forward as qf

    cp, cn, mask = qf.generate_chisep_phantom([64, 64, 64])
    mask = mask > 0
    field = qf.generate_field(cp + cn, mask=mask, voxel_size=[1, 1, 1], B0_dir=[0, 0, 1]) * mask
    r2 = np.full(mask.shape, 20.0)
    t = time.perf_counter()
    maps = separate_susceptibility(field, r2 + qf.generate_r2prime(cp, cn), r2, b0=3.0, mask=mask)
    dt = time.perf_counter() - t
    rows = ["| source | chi_para true / found (ppm) | error | chi_dia true / found (ppm) | error |", "|---|---|---|---|---|"]
    for i, (para, dia) in enumerate(zip([0.05, 0.10, 0.15, 0.20], [0.02, 0.03, 0.04, 0.05])):
        p = maps["chi_para"][np.isclose(cp, para)].mean()
        d = maps["chi_dia"][np.isclose(cn, -dia)].mean()
        rows.append(f"| {i + 1} | {para:.2f} / {p:.4f} | {100 * (p / para - 1):+.1f} % | {dia:.2f} / {d:.4f} | "
                    f"{100 * (d / dia - 1):+.1f} % |")
    rows.append(f"\n64^3 voxels of 1 mm, {maps.parameters['Iterations']} ADMM iterations, {dt:.1f} s.")
    return rows


def head(figure_slices: dict) -> list[str]:
    h = make_chisep_head()
    t = time.perf_counter()
    qsm = fit_qsm(h.magnitude, h.phase, h.echo_times, field_strength=3.0, affine=h.affine)
    t_qsm = time.perf_counter() - t
    r2 = decay_rate(h.spin_echo, h.spin_echo_times, h.mask)
    t = time.perf_counter()
    chain = separate_susceptibility(qsm["local_field"], qsm["r2star"], r2, b0=3.0, mask=qsm["mask"], affine=h.affine)
    t_sep = time.perf_counter() - t
    true_field = separate_susceptibility(h.local_field, decay_rate(h.magnitude, h.echo_times, h.mask), r2, b0=3.0,
                                         mask=h.mask, affine=h.affine)
    rows = ["| region (voxels) | chi_para true | whole chain | true field | chi_dia true | whole chain | true field |",
            "|---|---|---|---|---|---|---|"]
    keep = chain["mask"] > 0
    for label in (8, 9, 10, *IRON_NUCLEI, 3, 1, 7):
        sel = (h.labels == label) & keep
        cells = [f"{LABELS[label].replace('_', ' ')} ({sel.sum()})"]
        for name, truth in (("chi_para", h.chi_para), ("chi_dia", h.chi_dia)):
            ref = truth[sel].mean()
            cells.append(f"{ref:.4f}")
            for m in (chain, true_field):
                v = m[name][sel].mean()
                cells.append(f"{v:.4f} ({100 * (v / ref - 1):+.0f} %)")
        rows.append("| " + " | ".join(cells) + " |")
    rows.append(f"\n{h.mask.shape} voxels of 2 mm; fit_qsm {t_qsm:.1f} s, separation {t_sep:.1f} s "
                f"({chain.parameters['Iterations']} iterations).")
    z = int(np.argwhere(h.labels == 2)[:, 2].mean())  # through the globus pallidus
    figure_slices["head"] = (h.chi_para[..., z], chain["chi_para"][..., z], h.chi_dia[..., z], chain["chi_dia"][..., z])
    return rows


def _tract_means(values, mwf, labels, wm, lut_names):
    out = []
    for label in np.unique(labels[wm]):
        sel = wm & (labels == label)
        if sel.sum() >= 20:
            out.append((lut_names.get(int(label), str(label)), values[sel].mean(), mwf[sel].mean()))
    return out


def phantom(figure_slices: dict) -> list[str]:
    ph = make_phantom(seed=0, size="full", snr=200.0)
    mag, phase, mese = ph.acq["gre_mag"], ph.acq["gre_phase"], ph.acq["mese"]
    truth = ph.truth["gre"]
    mwf = resample_like(ph.truth["mese"]["mwf"], mag, order=1)
    r2_mono = r2_on_gre(spin_echo_r2(mese), mag)
    gm = myelin_water(mese.data, mese.echo_times, mask="auto")["gmt2"]
    r2_gmt2 = r2_on_gre(spin_echo_r2(Volume(gm, mese.affine, None, {"Units": "s"}, None)), mag)
    qsm = fit_qsm(mag.data, phase.data, mag.echo_times, field_strength=3.0, affine=mag.affine)
    wm_all = (truth["wm"].data > 0.9) & (qsm["mask"] > 0)
    wm = wm_all & (truth["chi_para"].data < 0.002)
    labels = truth["labels"].data
    names = dict(zip(ph.lut["index"].astype(int), ph.lut["abbreviation"]))
    rows = ["| R2 from | r, WM without iron or veins (voxels) | r, all WM | r, tract means | WM chi_dia (ppm) | "
            "CST chi_dia (ppm) |", "|---|---|---|---|---|---|"]
    for label, r2 in (("mono-exponential fit of the MESE (pipeline)", r2_mono), ("gmT2 of the MWF fit", r2_gmt2)):
        m = separate_susceptibility(qsm["local_field"], qsm["r2star"], r2, b0=3.0, mask=qsm["mask"], affine=mag.affine)
        tracts = _tract_means(m["chi_dia"], mwf, labels, wm_all, names)
        cst = np.isin(labels, [k for k, v in names.items() if str(v).startswith("CST")]) & wm_all
        rows.append(f"| {label} | {np.corrcoef(m['chi_dia'][wm], mwf[wm])[0, 1]:.3f} ({wm.sum()}) | "
                    f"{np.corrcoef(m['chi_dia'][wm_all], mwf[wm_all])[0, 1]:.3f} | "
                    f"{np.corrcoef([t[1] for t in tracts], [t[2] for t in tracts])[0, 1]:.3f} ({len(tracts)} tracts) | "
                    f"{m['chi_dia'][wm_all].mean():.4f} | {m['chi_dia'][cst].mean():.4f} |")
        if label.startswith("mono"):
            figure_slices["phantom"] = (truth["chi_dia"].data[..., 40], m["chi_dia"][..., 40], mwf[..., 40])
    cst = np.isin(labels, [k for k, v in names.items() if str(v).startswith("CST")]) & wm_all
    rows.append(f"| truth | | | | {truth['chi_dia'].data[wm_all].mean():.4f} | {truth['chi_dia'].data[cst].mean():.4f} |")
    t = time.perf_counter()
    chi_separation(mag.data, phase.data, mag.echo_times, r2_mono, field_strength=3.0, affine=mag.affine)
    rows.append(f"\nGRE {mag.shape[:3]} voxels of 2 mm; `chi_separation` (QSM + separation) {time.perf_counter() - t:.1f} s.")
    return rows


def figure(slices: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(10, 5.6))
    titles = ["head: chi_para truth", "chi_para found", "chi_dia truth", "chi_dia found"]
    for ax, img, title, vmax in zip(axes[0], slices["head"], titles, (0.15, 0.15, 0.05, 0.05)):
        ax.imshow(np.rot90(img), cmap="inferno" if "para" in title else "viridis", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    for ax, img, title, vmax in zip(axes[1], slices["phantom"], ["phantom: chi_dia truth", "chi_dia found",
                                                                  "true MWF"], (0.05, 0.05, 0.2)):
        ax.imshow(np.rot90(img), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("chi-separation: qsm-forward head (top, ppm) and project phantom (bottom)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", help="write the validation figure (PNG) here")
    args = parser.parse_args(argv)
    slices: dict = {}
    for title, rows in (("qsm-forward chi-separation cylinders", cylinders()), ("qsm-forward head", head(slices)),
                        ("project phantom (full, seed 0, SNR 200)", phantom(slices))):
        print(f"\n**{title}**\n")
        print("\n".join(rows))
    if args.figure:
        figure(slices, args.figure)


if __name__ == "__main__":
    main()

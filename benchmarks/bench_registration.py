"""Registration to the MNI template: napari-myelin's presets side by side with plain ANTsPy ``SyN``.

For each template pair (a full, 2 mm phantom subject's T1-weighted SPGR image, or ``--modality``,
against the shipped 2 mm template) and each repeat, the script times

* ``register_to_template(moving, preset=...)`` -- the whole call: image checks, digests, the ANTs run,
  the warped image and the similarity check;
* the peer: ``ants.registration(fixed, moving, type_of_transform="SyN")`` alone, on ANTs images
  built beforehand (its conversions are not timed),

(wall and CPU time: with one thread the CPU time is the work, little disturbed by other jobs)
in the same process, with the same ITK threads and the same seed (repeat ``r`` uses seed ``r`` for
both: with one thread each run is repeatable), alternating which runs first. Both results are
scored the same way (the peer's transforms resampled through the same code):

* correlation: Pearson correlation of the warped image with the template inside the template brain;
* NMI: the project's similarity check (normalised mutual information inside the template brain);
* WM Dice: the phantom's true WM (> 0.5) warped to the template vs the template WM (> 0.5);
* tract Dice: mean Dice over the atlas tract labels brought to native space vs the phantom's true
  native labels.

``fast`` runs the stages of ANTsPy's plain ``SyN`` (``registration.SYN_STAGES``), so with one thread both
give the same transforms and the same scores; it asks ANTs for the transform files only (the bare call also
resamples both images), which pays for napari-myelin's own work (checks, digests, the warped image, the
similarity check). Designs that skip the full-resolution levels (tuned on phantom seed 0) were faster but
less accurate than plain ``SyN`` on the held-out seeds 1-3, so were not kept.

Usage::

    python benchmarks/bench_registration.py [--phantoms 1 2] [--modality spgr] [--presets fast]
                                            [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time


def _scores(reg, template, mask, template_wm, labels, truth) -> dict:
    import numpy as np

    from napari_myelin.align import quality

    warped = reg.apply(reg.moving)
    nmi, _ = quality.similarity(warped, template, mask)
    a, b = np.asarray(warped.data, float)[mask], np.asarray(template.data, float)[mask]
    return {"corr": float(np.corrcoef(a, b)[0, 1]), "nmi": nmi,
            "wm": quality.dice(reg.apply(truth["wm"]).data > 0.5, template_wm),
            "tract": quality.mean_label_dice(reg.to_native(labels).data, truth["labels"].data)}


def _peer(ants, template, moving, seed: int):
    """Plain ``ants.registration(type_of_transform="SyN")``: (wall, CPU) seconds and a Registration for scoring."""
    from napari_myelin.align import ants_io
    from napari_myelin.align.transforms import Registration

    fi, mi = ants_io.to_ants(template), ants_io.to_ants(moving)
    prefix = tempfile.mkdtemp(prefix="bench-reg-") + "/peer_"
    ants.config._random_seed = ants_io.ants_seed(seed)  # the same seed napari-myelin gives ANTs
    t0, c0 = time.perf_counter(), time.process_time()
    out = ants.registration(fi, mi, type_of_transform="SyN", outprefix=prefix)
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    ants.config._random_seed = None
    inverse = list(out["invtransforms"])
    reg = Registration(template, moving, moving, list(out["fwdtransforms"]), inverse,
                       [p.endswith(".mat") for p in inverse], "SyN", float("nan"), float("nan"))
    reg._tmp = os.path.dirname(prefix)  # removed once scored
    return seconds, reg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", nargs="+", type=int, default=[1, 2],
                        help="phantom seeds, one template pair each")
    parser.add_argument("--modality", default="spgr", choices=["spgr", "mese", "gre", "dwi"])
    parser.add_argument("--presets", nargs="+", default=["fast"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each per pair (seeds 0..N-1)")
    parser.add_argument("--threads", type=int, default=1, help="ITK threads (1: every run repeatable)")
    args = parser.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # before ANTs first runs

    import ants
    import numpy as np

    from napari_myelin.align import atlas, quality
    from napari_myelin.align import registration as R
    from napari_myelin.sims.phantom import make_phantom

    template = atlas.load_template(2)
    mask = atlas.load_brain_mask(2).data.astype(bool)
    template_wm = atlas.load_tissue_probability("wm", 2).data > 0.5
    labels, _ = atlas.load_tract_atlas(2)
    acq = {"spgr": "spgr", "mese": "mese", "gre": "gre_mag", "dwi": "dwi"}[args.modality]
    print(f"ITK threads {args.threads}; load average at start {os.getloadavg()[0]:.1f}; "
          f"peer: ants.registration(type_of_transform='SyN'), antspyx {ants.__version__}", flush=True)
    keys = ("corr", "nmi", "wm", "tract")
    summary = []
    for ph_seed in args.phantoms:
        ph = make_phantom(seed=ph_seed, size="full")
        image = ph.acq[acq]
        moving = image.with_data(image.data[..., -1]) if args.modality == "spgr" else quality.reference_image(image)
        truth = ph.truth[args.modality]
        pair = f"phantom {ph_seed} {args.modality}"
        for preset in args.presets:
            rows = []
            for r in range(args.repeats):
                timed = {}
                for who in (("ours", "peer") if r % 2 == 0 else ("peer", "ours")):
                    if who == "ours":
                        t0, c0 = time.perf_counter(), time.process_time()
                        reg = R.register_to_template(moving, preset=preset, seed=r)
                        timed["ours"] = ((time.perf_counter() - t0, time.process_time() - c0), reg)
                    else:
                        timed["peer"] = _peer(ants, template, moving, r)
                ((t_ours, c_ours), reg), ((t_peer, c_peer), peer) = timed["ours"], timed["peer"]
                s_ours = _scores(reg, template, mask, template_wm, labels, truth)
                s_peer = _scores(peer, template, mask, template_wm, labels, truth)
                shutil.rmtree(peer._tmp, ignore_errors=True)
                rows.append((t_ours, t_peer, s_ours, s_peer, c_ours, c_peer))
                print(f"{pair} {preset:8s} seed {r}: napari-myelin {t_ours:5.1f} s, SyN {t_peer:5.1f} s, "
                      f"ratio {t_ours / t_peer:4.2f} (CPU {c_ours:5.1f} / {c_peer:5.1f} s) | " + "  ".join(
                          f"{k} {s_ours[k]:.4f}/{s_peer[k]:.4f}" for k in keys)
                      + f" | load {os.getloadavg()[0]:.1f}", flush=True)
            t_o, t_p = np.array([x[0] for x in rows]), np.array([x[1] for x in rows])
            mean_o = {k: float(np.mean([x[2][k] for x in rows])) for k in keys}
            mean_p = {k: float(np.mean([x[3][k] for x in rows])) for k in keys}
            c_o, c_p = np.array([x[4] for x in rows]), np.array([x[5] for x in rows])
            summary.append((pair, preset, t_o.mean(), t_p.mean(), float(np.median(t_o / t_p)),
                            float(np.median(c_o / c_p)), mean_o, mean_p))

    print(f"\nload average at end {os.getloadavg()[0]:.1f}; means over {args.repeats} seeds; "
          "each cell napari-myelin / plain SyN")
    print("| pair | preset | wall time (s) | wall ratio (median) | CPU ratio (median) | correlation | NMI | WM Dice "
          "| tract Dice |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pair, preset, to, tp, ratio, cratio, mo, mp in summary:
        print(f"| {pair} | `{preset}` | {to:.1f} / {tp:.1f} | {ratio:.2f} | {cratio:.2f} | "
              + " | ".join(f"{mo[k]:.4f} / {mp[k]:.4f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Registration to the MNI template: time per preset at 2 mm, napari-myelin against a bare antspyx call,
and the accuracy on a phantom subject (known deformation from template space).

For each preset the script registers the full (2 mm) phantom's reference image to the 2 mm
template with :func:`napari_myelin.align.registration.register_to_template` (which adds the
Volume <-> ANTs conversion, the transform bookkeeping, the warped image and the similarity check)
and with the same ``ants.registration`` call on prebuilt ANTs images (the peer), prints both
times and the ratio, then scores the napari-myelin result:

* WM Dice: the phantom's true WM (> 0.5) warped to the template vs the template WM (> 0.5);
* tract Dice: mean Dice over tract labels, atlas brought to native space vs the phantom's true
  native labels.

Usage::

    python benchmarks/bench_registration.py [--presets fast affine accurate] [--modality spgr]
                                            [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["fast", "affine", "accurate"])
    parser.add_argument("--modality", default="spgr", choices=["spgr", "mese", "gre", "dwi"])
    parser.add_argument("--threads", type=int, default=2, help="ITK threads (default 2: the dev container)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and registration seed")
    parser.add_argument("--no-peer", action="store_true", help="skip the bare antspyx timing")
    args = parser.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # before ANTs first runs

    import ants
    import numpy as np

    from napari_myelin.align import atlas
    from napari_myelin.align import ants_io, quality
    from napari_myelin.align import registration as R
    from napari_myelin.sims.phantom import make_phantom

    t0 = time.perf_counter()
    ph = make_phantom(seed=args.seed, size="full")
    print(f"phantom (full, seed {args.seed}) in {time.perf_counter() - t0:.0f} s", flush=True)
    acq = {"spgr": "spgr", "mese": "mese", "gre": "gre_mag", "dwi": "dwi"}[args.modality]
    image = ph.acq[acq]
    moving = quality.reference_image(image)
    if args.modality == "spgr":
        moving = image.with_data(image.data[..., -1])  # largest flip angle: T1-weighted like the template
    truth = ph.truth[args.modality]
    template = atlas.load_template(2)
    template_wm = atlas.load_tissue_probability("wm", 2).data > 0.5
    labels, _ = atlas.load_tract_atlas(2)
    print(f"moving: {args.modality} {moving.shape} voxels {np.round(moving.zooms, 2).tolist()} mm; "
          f"template {template.shape} at 2 mm; ITK threads {args.threads}", flush=True)

    rows = []
    for preset in args.presets:
        t0 = time.perf_counter()
        reg = R.register_to_template(moving, preset=preset, seed=args.seed, check=False)
        ours = time.perf_counter() - t0
        wm = quality.dice(reg.apply(truth["wm"]).data > 0.5, template_wm)
        tracts = quality.mean_label_dice(reg.to_native(labels).data, truth["labels"].data)
        peer = float("nan")
        if not args.no_peer:
            transform, kwargs = R._preset_transform(preset)
            fi, mi = ants_io.to_ants(template), ants_io.to_ants(moving)
            ants.config._random_seed = args.seed
            t0 = time.perf_counter()
            ants.registration(fi, mi, type_of_transform=transform, **kwargs)
            peer = time.perf_counter() - t0
            ants.config._random_seed = None
        rows.append((preset, R.PRESETS[preset], ours, peer, wm, tracts, reg.similarity))
        print(f"{preset:9s} napari-myelin {ours:6.1f} s  antspyx {peer:6.1f} s  ratio {ours / peer:5.2f}  "
              f"WM Dice {wm:.3f}  tract Dice {tracts:.3f}  NMI {reg.similarity:.3f}", flush=True)

    print("\n| preset | ANTs transform | napari-myelin (s) | antspyx alone (s) | ratio | WM Dice | tract Dice |")
    print("|---|---|---|---|---|---|---|")
    for preset, transform, ours, peer, wm, tracts, _ in rows:
        print(f"| `{preset}` | `{transform}` | {ours:.1f} | {peer:.1f} | {ours / peer:.2f} | {wm:.3f} | {tracts:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time ROI/tract statistics: napari-myelin's roi_statistics against scipy.ndimage in the same run.

The labels are the shipped 1 mm tract atlas (HCP842-derived, 182 x 218 x 182 voxels); the maps are
random. The peer computes the same numbers with scipy.ndimage's per-label functions
(``mean``, ``standard_deviation`` (rescaled to n-1), ``median``, ``minimum``, ``maximum``) and
``labeled_comprehension`` with ``np.percentile`` for the IQR. Both results are checked equal.

Run: ``python benchmarks/bench_stats.py [--maps 3] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from napari_myelin.align.atlas import load_tract_atlas
from napari_myelin.stats.roi import roi_statistics


def peer(labels: np.ndarray, maps: dict[str, np.ndarray], index: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    counts = ndimage.sum_labels(np.ones_like(labels, dtype=float), labels, index)
    for name, m in maps.items():
        m = m.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # single-voxel tracts: SD undefined (NaN)
            sd = ndimage.standard_deviation(m, labels, index) * np.sqrt(counts / (counts - 1))
        iqr = ndimage.labeled_comprehension(
            m, labels, index, lambda v: np.subtract(*np.percentile(v, [75, 25])), float, np.nan)
        out[name] = {
            "mean": ndimage.mean(m, labels, index), "sd": sd, "median": ndimage.median(m, labels, index),
            "iqr": iqr, "min": ndimage.minimum(m, labels, index), "max": ndimage.maximum(m, labels, index),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=1, choices=(1, 2))
    args = parser.parse_args()
    vol, lut = load_tract_atlas(resolution_mm=args.resolution)
    labels = vol.data.astype(np.int32)
    rng = np.random.default_rng(0)
    maps = {f"map{i}": rng.random(labels.shape).astype(np.float32) for i in range(args.maps)}
    index = np.unique(labels[labels > 0])
    print(f"labels {labels.shape}, {index.size} tracts, {int((labels > 0).sum())} labelled voxels, {args.maps} maps")

    def best(fn):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t0)
        return min(times), res

    t_ours, ours = best(lambda: roi_statistics(labels, maps).table)
    t_peer, ref = best(lambda: peer(labels, maps, index))
    for name in maps:
        rows = ours[ours["map"] == name].set_index("label").loc[index]
        for key, values in ref[name].items():
            np.testing.assert_allclose(rows[key].to_numpy(), values, rtol=1e-9, atol=1e-12, err_msg=f"{name} {key}")
    print(f"napari-myelin roi_statistics : {t_ours:8.3f} s")
    print(f"scipy.ndimage per-label      : {t_peer:8.3f} s")
    print(f"ratio (peer / napari-myelin) : {t_peer / t_ours:8.2f}x   (results equal to 1e-9)")


if __name__ == "__main__":
    main()

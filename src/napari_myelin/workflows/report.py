"""Pictures of a pipeline result that need no display: the tract chart.

``tracts.png``: mean MWF per tract (bar) with the integrated myelin map (and the truth, when given).
The napari screenshot (``report.png``) is an adapter: :func:`napari_myelin._screenshot.render_report`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_myelin.io.volume import atomic_write_bytes


def tract_chart(tracts_csv: str | Path, out_png: str | Path, *, truth: pd.Series | None = None,
                maps: tuple[str, ...] = ("mwf", "imwf", "mwf_qpm")) -> Path:
    """Bar chart of tract means (MWF %, integrated MWF %, calibrated QPM %) with optional truth dots."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    table = pd.read_csv(tracts_csv)
    table = table[table["map"].isin(maps) & (table["status"] == "ok")]
    wide = table.pivot_table(index="name", columns="map", values="mean").reindex(columns=list(maps)).dropna(how="all")
    order = wide.mean(axis=1).sort_values().index
    wide = wide.loc[order]
    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(wide))))
    height = 0.8 / max(1, wide.shape[1])
    y = np.arange(len(wide))
    for i, col in enumerate(wide.columns):
        ax.barh(y + i * height, wide[col].to_numpy(), height=height, label=col)
    if truth is not None:
        ax.plot(truth.reindex(order).to_numpy(), y + 0.4 - height / 2, "k|", markersize=10, label="truth")
    ax.set_yticks(y + 0.4 - height / 2)
    ax.set_yticklabels(order, fontsize=7)
    ax.set_xlabel("mean over tract (%)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    return out

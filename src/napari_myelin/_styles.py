"""How each output map is shown in napari: colormap, contrast limits and display scaling.

Core maps keep their physical units (MWF as a fraction 0-1); :func:`display_style` gives the
layer settings users expect (MWF in %, FA 0-1 grey, chi in ppm with a diverging colormap ...).
"""

from __future__ import annotations

#: name -> (colormap, contrast limits, factor applied to the stored values, displayed units)
MAP_STYLES: dict[str, tuple[str, tuple[float, float], float, str]] = {
    "mwf": ("magma", (0.0, 25.0), 100.0, "%"),
    "iewf": ("viridis", (50.0, 100.0), 100.0, "%"),
    "imwf": ("magma", (0.0, 25.0), 1.0, "%"),
    "mwf_qpm": ("magma", (0.0, 25.0), 1.0, "%"),
    "imwf_sd": ("viridis", (0.0, 5.0), 1.0, "%"),
    "gmt2": ("viridis", (0.0, 0.15), 1.0, "s"),
    "alpha": ("twilight", (120.0, 180.0), 1.0, "deg"),
    "snr": ("gray", (0.0, 500.0), 1.0, ""),
    "fa": ("gray", (0.0, 1.0), 1.0, ""),
    "md": ("gray", (0.0, 3e-3), 1.0, "mm^2/s"),
    "ad": ("gray", (0.0, 3e-3), 1.0, "mm^2/s"),
    "rd": ("gray", (0.0, 3e-3), 1.0, "mm^2/s"),
    "mk": ("inferno", (0.0, 2.0), 1.0, ""),
    "ak": ("inferno", (0.0, 2.0), 1.0, ""),
    "rk": ("inferno", (0.0, 3.0), 1.0, ""),
    "kfa": ("gray", (0.0, 1.0), 1.0, ""),
    "mkt": ("inferno", (0.0, 2.0), 1.0, ""),
    "chi": ("coolwarm", (-0.1, 0.1), 1.0, "ppm"),
    "local_field": ("coolwarm", (-0.05, 0.05), 1.0, "ppm"),
    "field": ("coolwarm", (-50.0, 50.0), 1.0, "Hz"),
    "t1": ("viridis", (0.0, 3.0), 1.0, "s"),
    "pd": ("gray", (0.0, 1.0), 1.0, ""),
    "mtv": ("gray", (0.0, 0.4), 1.0, ""),
    "qpm_myelin": ("magma", (0.0, 0.3), 1.0, "fraction"),
    "mtsat": ("magma", (0.0, 5.0), 1.0, "p.u."),
    "mtr": ("viridis", (0.0, 60.0), 1.0, "%"),
}


def display_style(name: str, units: str = "") -> tuple[dict, float]:
    """Layer keyword arguments and the factor to apply to the data for a map called ``name``.

    Unknown maps get a grey colormap and automatic contrast limits. A factor of 100 applies only to
    maps stored as a fraction (``units == "fraction"``) that are shown in %.
    """
    key = name.lower()
    if key not in MAP_STYLES:
        return {"colormap": "gray", "metadata": {"units": units}}, 1.0
    cmap, limits, factor, shown = MAP_STYLES[key]
    if factor != 1.0 and units not in ("fraction", ""):
        factor, shown = 1.0, units
    return {"colormap": cmap, "contrast_limits": limits, "metadata": {"units": shown}}, factor

"""How each output map is shown in napari: colormap, contrast limits, display scaling, name and units.

Core maps keep their physical units (MWF as a fraction 0-1); :func:`display_style` gives the
layer settings users expect (MWF in %, FA 0-1 grey, chi in ppm with a diverging colormap ...).

:func:`map_layer` is what the docks use for a map they computed: the label with units (``MAP_LABELS``,
e.g. "MWF (%)") first in the layer name, contrast limits from robust percentiles (1-99 %) inside the mask
(:func:`robust_limits`; symmetric about 0 for the diverging maps of :data:`DIVERGING`: chi, fields, z),
values outside the mask NaN (transparent), the map key, units and description in ``metadata``.
"""

from __future__ import annotations

import numpy as np

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
        return {"colormap": "gray", "metadata": {"units": units, "map": key}}, 1.0
    cmap, limits, factor, shown = MAP_STYLES[key]
    if factor != 1.0 and units not in ("fraction", ""):
        factor, shown = 1.0, units
    return {"colormap": cmap, "contrast_limits": limits, "metadata": {"units": shown, "map": key}}, factor


#: Maps shown with a diverging colormap centred at 0 (symmetric contrast limits).
DIVERGING = {"chi", "local_field", "field", "z", "abnormality"}

#: map key -> (label with units, colormap) of the maps the docks add.
MAP_LABELS: dict[str, tuple[str, str]] = {
    "mwf": ("MWF (%)", "magma"), "iewf": ("IEWF (%)", "viridis"), "gmt2": ("geometric-mean T2 (s)", "viridis"),
    "alpha": ("refocusing angle (deg)", "twilight_shifted"), "snr": ("SNR", "gray"),
    "fa": ("FA", "gray"), "md": ("MD (mm^2/s)", "gray"), "mk": ("MK", "inferno"), "ak": ("AK", "inferno"),
    "rk": ("RK", "inferno"), "field": ("QSM field (Hz)", "coolwarm"),
    "local_field": ("QSM local field (ppm)", "coolwarm"),
    "chi": ("chi (ppm)", "coolwarm"), "r2star": ("R2* (1/s)", "magma"), "t1": ("T1 (s)", "magma"),
    "pd": ("PD", "gray"), "mtv": ("MTV", "viridis"), "qpm_myelin": ("QPM myelin (fraction)", "inferno"),
    "mwf_qpm": ("MWF from QPM (%)", "magma"), "mtsat": ("MTsat (p.u.)", "magma"), "mtr": ("MTR (%)", "viridis"),
    "a": ("amplitude (a.u.)", "gray"), "chi_para": ("chi_para (ppm)", "inferno"),
    "chi_dia": ("chi_dia (ppm)", "viridis"), "r2prime": ("R2' (1/s)", "magma"),
    "imwf": ("integrated MWF (%)", "magma"), "imwf_sd": ("integrated MWF SD (%)", "viridis"),
}


def robust_limits(data, mask=None, percentiles=(1.0, 99.0), *, diverging: bool = False) -> tuple[float, float]:
    """Contrast limits from the ``percentiles`` of the finite values inside ``mask`` (all finite values
    without one); symmetric about 0 with ``diverging``. ``(0, 1)`` when there is no finite value.

    Parameters
    ----------
    data : ndarray
        The map.
    mask : ndarray of bool, optional
        Voxels the limits are taken from (same shape as ``data``).
    percentiles : (float, float)
        Lower and upper percentile (%).
    diverging : bool
        Limits ``(-m, m)`` with ``m`` the larger magnitude of the two percentiles.

    Returns
    -------
    (float, float)
        Lower and upper contrast limit (``lower < upper``).
    """
    arr = np.asarray(data, dtype=float)
    keep = np.isfinite(arr) if mask is None else np.isfinite(arr) & np.asarray(mask, bool)
    values = arr[keep]
    if values.size == 0:
        return (-1.0, 1.0) if diverging else (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if diverging:
        m = max(abs(lo), abs(hi)) or 1.0
        return (-m, m)
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-3
    return (lo, hi)


def map_layer(key: str, arr, *, units: str, source: str = "", mask=None, label: str | None = None,
              metadata: dict | None = None) -> tuple[np.ndarray, dict]:
    """Data and layer settings of a computed map: NaN outside ``mask``, robust contrast limits, the colormap
    by kind and the name ``"<label> · <source>"`` (label with units, e.g. "MWF (%)", first so it stays
    readable when the layer list cuts the name; the full name is the layer's tooltip).

    Parameters
    ----------
    key : str
        Map key (``mwf``, ``chi`` ...; :data:`MAP_LABELS`); unknown keys get their key as label and grey.
    arr : ndarray
        The map (any order; ``mask`` on the same grid).
    units : str
        Units of the values (stored in ``metadata["units"]``).
    source : str
        Name of the input layer (appended to the name).
    mask : ndarray of bool, optional
        Voxels with a value; the others become NaN and the limits come from these.
    label : str, optional
        Label instead of the one of :data:`MAP_LABELS`.
    metadata : dict, optional
        More metadata (method, parameters ...).

    Returns
    -------
    (ndarray, dict)
        float32 data and the keyword arguments ``name``, ``colormap``, ``contrast_limits``, ``metadata``.
    """
    default_label, cmap = MAP_LABELS.get(key, (key, "gray"))
    label = label or default_label
    data = np.asarray(arr, dtype=np.float32)
    if mask is not None:
        data = np.where(np.asarray(mask, bool), data, np.float32(np.nan)).astype(np.float32)
    limits = robust_limits(data, mask, diverging=key in DIVERGING)
    meta = {**(metadata or {}), "units": units, "map": key, "label": label}
    name = f"{label} · {source}" if source else label
    return data, {"name": name, "colormap": cmap, "contrast_limits": limits, "metadata": meta}

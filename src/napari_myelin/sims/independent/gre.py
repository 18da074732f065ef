r"""Multi-echo gradient echo: susceptibility of brain and head, white-matter microstructure, R2* decay.

Field (ppm of B0), computed on a grid twice as fine as the acquisition and averaged as complex signal
over each acquired voxel (intravoxel dephasing, no inverse crime):

* **dipole convolution** (own k-space kernel, Lorentz-sphere corrected; Salomir et al. 2003, Marques
  & Bowtell 2005), zero padded to twice the grid::

      delta(k) = (1/3 - (k.b)^2 / |k|^2) chi(k),      delta(k = 0) = 0,

  with ``b`` the B0 direction (world z) in the grid's voxel axes;
* **brain**: the bulk isotropic susceptibility, relative to CSF: WM ``chi_I MVF`` with the myelin
  volume fraction ``MVF = MWF pd / 0.4`` (myelin is 40 % water), cortex and iron-rich deep nuclei,
  veins;
* **head** (the background field): soft tissue at water susceptibility, a bone shell, air in the
  sinuses and mastoids and around the head (``chi_air - chi_water = 9.41 ppm``, Schenck 1996), on
  the fine grid's lattice (2 mm at most) extended to 272 mm; the scanner's 2nd-order shim (solid harmonics,
  least squares over the brain) is subtracted from the total field;
* **white-matter microstructure** (hollow-cylinder fibre model, Wharton & Bowtell 2012): myelin,
  axonal and extracellular water of WM have their own frequency offsets, relative to the extracellular
  water, for a fibre at angle ``theta`` to B0 and g-ratio ``g`` (the ``cos 2 phi`` terms average to zero
  over each compartment)::

      axon    (3/4) chi_A sin^2(theta) ln(1/g)
      myelin  chi_I (cos^2(theta) - 1/3)/2 + chi_A [sin^2(theta) (-5/12 + (3/4) L) - cos^2(theta)/6] + E
      L = <ln(r_o/r)>_myelin = 1/2 - g^2 ln(1/g) / (1 - g^2)

  and their own T2* (Nam et al. 2015). The axonal water share of the non-myelin water is
  ``AVF / (1 - MVF)`` with ``AVF = MVF g^2 / (1 - g^2)``. These offsets are *not* in the bulk
  isotropic susceptibility: they are the orientation dependence a scalar QSM model cannot represent.

**Susceptibility sources** (truth ``chi_para``, ``chi_dia``, the convention of chi-separation, Shin et
al. 2021): ``chi = chi_para - chi_dia`` exactly, with ``chi_para >= 0`` the paramagnetic sources (GM:
cortex and deep-nuclei iron; venous blood; with ``chi_separation`` also white-matter iron) and
``chi_dia = |chi_I| MVF >= 0`` the magnitude of the diamagnetic myelin. By default the compartments keep
the T2* of the literature (below) and the deep-GM R2* rises with the iron above the cortex's (the GRE
of earlier versions, unchanged). With ``chi_separation=True`` the GRE is built from the sources:
white matter holds iron (``chi_iron_wm``, paramagnetic) and every water compartment's decay is its
spin-echo rate (the MESE's pool T2) plus the static-dephasing R2' of its class's sources
(Yablonskiy & Haacke 1994)::

    R2*_comp = 1/T2_comp + R2'_class,   R2'_class = Dr+ chi_para,class + Dr- chi_dia,class

with the subject's ``Dr+`` (``r2s_per_ppm_iron``) and ``Dr-`` (``dr_dia``); CSF and veins keep their R2*.
The truth ``r2prime`` is then the volume-weighted ``R2'`` of the tissue classes (veins' own decay not
included) and ``r2`` the spin-echo R2 of :func:`.tissue.spin_echo_r2` on the GRE grid (both modes).

Signal of a fine voxel at echo time ``TE``::

    s(TE) = B_rx e^{i phi_0} sum_compartments w E_1 e^{-R2* TE} e^{i 2 pi gamma B0 (delta + Delta) TE}

with Ernst T1 weighting ``E_1`` at the GRE flip angle (x B1) and TR, a smooth receive phase
``phi_0``, and phase convention ``+2 pi f TE`` (a positive field gives a positive phase).

References
----------
Salomir R et al. Concepts Magn Reson B 19:26-34 (2003).  Marques JP, Bowtell R. Concepts Magn Reson B
25:65-78 (2005).  Wharton S, Bowtell R. PNAS 109:18559-18564 (2012).  Nam Y et al. NeuroImage
116:214-221 (2015).  Schenck JF. Med Phys 23:815-850 (1996).  Shin HG et al. NeuroImage 240:118371
(2021).  Yablonskiy DA, Haacke EM. Magn Reson Med 32:749-763 (1994).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from napari_myelin.sims.independent.anatomy import template
from napari_myelin.sims.independent.constants import (AIR_CAVITIES, B0_TESLA, BLOOD_T1, BLOOD_WATER, CHI_AIR,
                                                      CHI_BONE, CHI_MYELIN_ANISO, CHI_MYELIN_ISO, GAMMA_HZ_PER_T,
                                                      GRE_DTE, GRE_ECHOES, GRE_FLIP, GRE_TE1, GRE_TR,
                                                      HEAD_MARGIN_MM, MYELIN_EXCHANGE_SHIFT, MYELIN_WATER_CONTENT,
                                                      S0_SCALE, SKULL_SHELL_MM)
from napari_myelin.sims.independent.fields import noise_sigma
from napari_myelin.sims.independent.geometry import Sampler, block_average, refined, voxel_centres

#: Extent (mm) of the grid on which the field of the head is computed, and the Gaussian blur (SD, mm)
#: of the head's susceptibility before the FFT: a 9.41 ppm step sampled on a lattice rings (Gibbs)
#: through the brain at the 1e-3 level, as large as the brain's own field; 2 mm of blur removes it
#: and changes the field only within a few mm of the air and bone interfaces.
HEAD_FOV_MM, HEAD_BLUR_MM = 272.0, 2.0
from napari_myelin.sims.independent.session import Session, volume
from napari_myelin.sims.independent.tissue import CSF, GM, LESION, NAWM, classes_on_grid, spin_echo_r2, water


def dipole_kernel(shape, voxel_mm, b_dir) -> np.ndarray:
    """``1/3 - (k.b)^2/|k|^2`` on the real-FFT grid of ``shape`` (``k = 0`` set to 0), float64."""
    b = np.asarray(b_dir, float) / np.linalg.norm(b_dir)
    ks = [sfft.fftfreq(n, d) for n, d in zip(shape[:2], voxel_mm[:2])] + [sfft.rfftfreq(shape[2], voxel_mm[2])]
    kx, ky, kz = np.meshgrid(*ks, indexing="ij", sparse=True)
    k2 = kx * kx + ky * ky + kz * kz
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1.0 / 3.0 - kb * kb / k2
    d[0, 0, 0] = 0.0
    return d


def dipole_field(chi: np.ndarray, voxel_mm, b_dir, pad: float = 2.0) -> np.ndarray:
    """Field (ppm) of the susceptibility ``chi`` (ppm), zero padded to ``pad`` times the grid (the
    periodic images of the sources then lie at least ``(pad - 1)`` grids away)."""
    shape = tuple(sfft.next_fast_len(int(pad * n), real=True) for n in chi.shape)
    spec = sfft.rfftn(np.asarray(chi, np.float64), shape)
    field = sfft.irfftn(spec * dipole_kernel(shape, np.asarray(voxel_mm, float), b_dir), shape)
    return field[tuple(slice(0, n) for n in chi.shape)]


def hcfm_offsets(cos2_theta, g_ratio) -> tuple[np.ndarray, np.ndarray]:
    """Axonal and myelin water frequency offsets (ppm) relative to extracellular water (module docstring)."""
    c2 = np.asarray(cos2_theta, float)
    s2 = 1.0 - c2
    g = float(g_ratio)
    log_g = np.log(1.0 / g)
    mean_log = 0.5 - g * g * log_g / (1.0 - g * g)
    axon = 0.75 * CHI_MYELIN_ANISO * s2 * log_g
    myelin = (CHI_MYELIN_ISO * (c2 - 1.0 / 3.0) / 2.0
              + CHI_MYELIN_ANISO * (s2 * (-5.0 / 12.0 + 0.75 * mean_log) - c2 / 6.0) + MYELIN_EXCHANGE_SHIFT)
    return axon, myelin


def myelin_volume_fraction(mwf, pd) -> np.ndarray:
    """``MVF = MWF pd / water content of myelin``."""
    return np.asarray(mwf, float) * np.asarray(pd, float) / MYELIN_WATER_CONTENT


@functools.lru_cache(maxsize=1)
def head_model() -> tuple[np.ndarray, np.ndarray]:
    """Susceptibility relative to air (ppm) of the head on a padded 2 mm template grid, and its affine.

    Soft tissue (the brain mask dilated by ``HEAD_MARGIN_MM``, extended down as a neck) is
    ``-CHI_AIR``; a bone shell ``SKULL_SHELL_MM`` from the brain adds ``CHI_BONE``; air cavities
    (outside the brain) are 0, like the air around the head.
    """
    t = template()
    pad = 14
    brain = np.pad(t["brain"] > 0.5, pad)
    aff = t["affine"].copy()
    aff[:3, 3] -= aff[:3, :3] @ np.full(3, pad)
    z_neck = int(np.argmax(brain.any(axis=(0, 1))))  # lowest brain slice
    neck = brain[:, :, z_neck + 6]
    brain_neck = brain.copy()
    brain_neck[:, :, :z_neck + 6] |= neck[:, :, None]
    dist = ndi.distance_transform_edt(~brain_neck, sampling=2.0)
    chi = np.where(dist <= HEAD_MARGIN_MM, -CHI_AIR, 0.0)
    chi += np.where((dist > SKULL_SHELL_MM[0]) & (dist <= SKULL_SHELL_MM[1]), CHI_BONE, 0.0)
    world = voxel_centres(aff, brain.shape)
    for centre, semi in AIR_CAVITIES:
        inside = ((((world - np.asarray(centre)[:, None]) / np.asarray(semi)[:, None]) ** 2).sum(0) <= 1.0)
        chi[inside.reshape(brain.shape) & ~brain] = 0.0
    chi.setflags(write=False)
    return chi.astype(np.float32), aff


def shim_residual(field: np.ndarray, world: np.ndarray, mask: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``field`` minus its least-squares fit over ``mask`` by the scanner's shim terms.

    The shim coils make the solid spherical harmonics up to 2nd order (1; x, y, z; x^2 - y^2,
    2 z^2 - x^2 - y^2, xy, xz, yz), all harmonic, so the residual keeps the Laplacian of ``field``.
    ``world`` (3, N) are the positions of the flattened ``field`` voxels (mm).
    """
    x, y, z = (world - centre[:, None]) / 100.0
    basis = np.stack([np.ones_like(x), x, y, z, x * x - y * y, 2 * z * z - x * x - y * y, x * y, x * z, y * z],
                     axis=1)
    m = mask.ravel()
    coef, *_ = np.linalg.lstsq(basis[m], field.ravel()[m], rcond=None)
    return field - (basis @ coef).reshape(field.shape)


def _background(se: Session, faff: np.ndarray, fshp) -> np.ndarray:
    """Field (ppm) of the head on the fine grid ``(faff, fshp)``.

    The head is sampled on the same lattice (every ``f``-th point, ``f`` = 2 mm / fine voxel, at least
    1) extended to cover 272 mm, its field computed there and cropped (``f = 1``: exactly the fine
    lattice) or interpolated by cubic splines. Keeping the lattice keeps the field harmonic in the brain.
    """
    chi, aff_t = head_model()
    voxel = np.linalg.norm(faff[:3, :3], axis=0)
    f = max(1, int(round(2.0 / voxel.min())))
    ext = np.ceil((HEAD_FOV_MM / (f * voxel) - np.asarray(fshp) / f) / 2).astype(int)
    shape = tuple(int(np.ceil(n / f)) + 2 * e for n, e in zip(fshp, ext))
    aff = faff.copy()
    aff[:3, :3] = faff[:3, :3] * f
    aff[:3, 3] = faff[:3, :3] @ (-ext * f) + faff[:3, 3]
    head = ndi.gaussian_filter(Sampler(aff_t, se.pose, aff, shape, supersample=1).mean(chi), HEAD_BLUR_MM / (f * voxel))
    field = dipole_field(head, voxel * f, (faff[:3, :3] / voxel).T @ np.array([0.0, 0.0, 1.0]), pad=1.5)
    idx = [np.arange(n) / f + e for n, e in zip(fshp, ext)]
    if f == 1:
        return field[np.ix_(*[i.astype(int) for i in idx])]
    coords = np.stack(np.meshgrid(*idx, indexing="ij"), 0).reshape(3, -1)
    return ndi.map_coordinates(field, coords, order=3, mode="nearest").reshape(fshp)


def source_r2prime(cl: dict, tissue: dict, chi_gm: np.ndarray) -> np.ndarray:
    """Static-dephasing R2' (1/s) of each class's own sources (N, 4), the ``chi_separation`` model (module
    docstring): WM classes ``Dr+ chi_iron_wm + Dr- |chi_I| MVF``, GM ``Dr+ chi_gm``, CSF 0."""
    out = np.zeros(cl["mwf"].shape)
    for c in (NAWM, LESION):
        mvf = myelin_volume_fraction(cl["mwf"][:, c], cl["pd"][:, c])
        out[:, c] = tissue["r2s_per_ppm_iron"] * tissue["chi_iron_wm"] + tissue["dr_dia"] * abs(CHI_MYELIN_ISO) * mvf
    out[:, GM] = tissue["r2s_per_ppm_iron"] * chi_gm
    return out


def _compartments(se: Session, fs: Sampler, cl: dict, faff: np.ndarray, b1: np.ndarray,
                  chi_separation: bool = False) -> tuple:
    """Weights, R2* (1/s) and frequency offsets (ppm) (N, 9) of the GRE compartments of the inside voxels.

    NAWM and lesion: myelin, axonal, extracellular water; GM; CSF; venous blood. ``chi_separation``:
    R2* from the spin-echo T2 and the sources' R2' (:func:`source_r2prime`).
    """
    tis, pick = se.tissue, cl["inside"].ravel()
    w_cls = water(cl)
    a = np.deg2rad(GRE_FLIP * b1)[:, None]
    t1 = np.where(np.arange(4) == CSF, cl["t1_ie"], cl["t1_fast"])
    e1 = np.exp(-GRE_TR / t1)
    w_cls = w_cls * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    fib = se.pose.direction_to_scanner(fs.nearest(se.anatomy["fibre"]).astype(float)).reshape(-1, 3)[pick]
    d_axon, d_myelin = hcfm_offsets(fib[:, 2] ** 2, tis["g_ratio"])
    weights, r2s, offsets = [], [], []
    for c in (NAWM, LESION):
        mvf = np.clip(myelin_volume_fraction(cl["mwf"][:, c], cl["pd"][:, c]), 0, 0.6)
        avf = mvf * tis["g_ratio"] ** 2 / (1 - tis["g_ratio"] ** 2)
        f_ax = (1 - cl["mwf"][:, c]) * np.clip(avf / (1 - mvf), 0, 1)
        weights += [w_cls[:, c] * cl["mwf"][:, c], w_cls[:, c] * f_ax, w_cls[:, c] * (1 - cl["mwf"][:, c] - f_ax)]
        r2s += [1 / tis["t2s_myelin"], 1 / tis["t2s_axon"], 1 / tis["t2s_extra"]]
        offsets += [d_myelin, d_axon, 0.0]
    chi_gm = fs.mean(se.anatomy["chi_gm"]).ravel()[pick]
    vein = fs.mean(se.anatomy["vein"]).ravel()[pick]
    e1b = np.exp(-GRE_TR / BLOOD_T1)
    weights += [w_cls[:, GM], w_cls[:, CSF], vein * BLOOD_WATER * np.sin(a[:, 0]) * (1 - e1b) / (
        1 - np.cos(a[:, 0]) * e1b)]
    r2s += [tis["r2s_gm"] + tis["r2s_per_ppm_iron"] * np.maximum(chi_gm - tis["chi_cortex"], 0), tis["r2s_csf"],
            tis["r2s_vein"]]
    if chi_separation:  # spin-echo rates + the sources' static dephasing (module docstring)
        rp = source_r2prime(cl, tis, chi_gm)
        r2s = [1 / cl["t2_my"] + rp[:, NAWM], 1 / cl["t2_ie"][:, NAWM] + rp[:, NAWM],
               1 / cl["t2_ie"][:, NAWM] + rp[:, NAWM], 1 / cl["t2_my"] + rp[:, LESION],
               1 / cl["t2_ie"][:, LESION] + rp[:, LESION], 1 / cl["t2_ie"][:, LESION] + rp[:, LESION],
               1 / cl["t2_ie"][:, GM] + rp[:, GM], tis["r2s_csf"], tis["r2s_vein"]]
    offsets += [0.0, 0.0, 0.0]
    n = pick.sum()
    return (np.stack([np.broadcast_to(x, (n,)) for x in weights], 1),
            np.stack([np.broadcast_to(x, (n,)) for x in r2s], 1),
            np.stack([np.broadcast_to(x, (n,)) for x in offsets], 1), chi_gm, vein)


def _bulk_chi(se: Session, cl: dict, chi_gm: np.ndarray, vein: np.ndarray) -> np.ndarray:
    """Bulk isotropic susceptibility (ppm, CSF = 0) of the inside voxels: myelin, GM (cortex, iron), veins."""
    chi = sum(cl["f"][:, c] * CHI_MYELIN_ISO * myelin_volume_fraction(cl["mwf"][:, c], cl["pd"][:, c])
              for c in (NAWM, LESION))
    return chi + cl["f"][:, GM] * chi_gm + vein * se.tissue["chi_vein"]


def source_maps(se: Session, cl: dict, chi_gm: np.ndarray, vein: np.ndarray, chi_separation: bool) -> dict:
    """``chi_para``, ``chi_dia`` (ppm, >= 0), ``r2prime`` and spin-echo ``r2`` (1/s) of the inside voxels.

    ``chi_para - chi_dia`` is the bulk susceptibility of :func:`_bulk_chi` (plus the WM iron of the
    ``chi_separation`` GRE); ``r2prime`` is the volume-weighted R2' of :func:`source_r2prime` (meaningful
    for the ``chi_separation`` GRE only: the default GRE's decay is not built from it).
    """
    f = cl["f"]
    wm = f[:, NAWM] + f[:, LESION]
    dia = sum(f[:, c] * abs(CHI_MYELIN_ISO) * myelin_volume_fraction(cl["mwf"][:, c], cl["pd"][:, c])
              for c in (NAWM, LESION))
    para = f[:, GM] * chi_gm + vein * se.tissue["chi_vein"]
    if chi_separation:
        para = para + wm * se.tissue["chi_iron_wm"]
    rp = (f * source_r2prime(cl, se.tissue, chi_gm)).sum(1)
    return {"chi_para": para, "chi_dia": dia, "r2prime": rp, "r2": spin_echo_r2(cl)}


def acquire_gre(se: Session, chi_separation: bool = False) -> tuple:
    """Multi-echo GRE magnitude and wrapped phase (module docstring) and the truth (chi, its sources, fields).

    ``chi_separation``: iron in WM and compartment R2* built from the spin-echo T2 and the sources' R2'.
    """
    aff, shp, s = se.grid("gre")
    common = se.common_truth(s, aff)
    faff, fshp = refined(aff, shp, 2)
    fs = Sampler(se.anatomy["affine"], se.pose, faff, fshp, supersample=1)
    cl = classes_on_grid(se.anatomy, fs, se.tissue)
    pick = cl["inside"].ravel()
    b1 = se.fields.transmit(fs.world)
    weights, r2s, offsets, chi_gm, vein = _compartments(se, fs, cl, faff, b1[pick], chi_separation)
    chi = np.zeros(pick.size)
    chi[pick] = _bulk_chi(se, cl, chi_gm, vein)
    sources = {}
    for k, v in source_maps(se, cl, chi_gm, vein, chi_separation).items():
        sources[k] = np.zeros(pick.size)
        sources[k][pick] = v
        sources[k] = sources[k].reshape(fshp)
    if chi_separation:
        chi[pick] += (cl["f"][:, NAWM] + cl["f"][:, LESION]) * se.tissue["chi_iron_wm"]
    chi = chi.reshape(fshp)
    axes = faff[:3, :3] / np.linalg.norm(faff[:3, :3], axis=0)
    local = dipole_field(chi, np.linalg.norm(faff[:3, :3], axis=0), axes.T @ np.array([0.0, 0.0, 1.0]))
    total = shim_residual(local + _background(se, faff, fshp), fs.world, cl["brain"] >= 0.5, se.fields.centre)
    te = GRE_TE1 + GRE_DTE * np.arange(GRE_ECHOES)
    hz = GAMMA_HZ_PER_T * B0_TESLA * 1e-6 * (total.ravel()[pick][:, None] + offsets)  # (N, comps)
    sig = np.zeros((pick.size, te.size), complex)
    sig[pick] = np.einsum("nc,nce->ne", weights, np.exp(-r2s[..., None] * te + 2j * np.pi * hz[..., None] * te))
    coil = se.fields.receive(fs.world) * np.exp(1j * se.fields.receive_phase(fs.world))
    sig = block_average((sig * coil[:, None]).reshape(fshp + (te.size,)), 2)
    mask = common["mask"].data
    sig *= 0.8 * S0_SCALE / np.abs(sig[..., 0])[mask].mean()  # first echo: brain mean 800
    sigma = noise_sigma(np.abs(sig[..., 0]), mask, se.snr["gre"])
    rng = se.noise["gre"]
    sig = sig + sigma * (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape))
    meta = dict(EchoTime=te.round(6).tolist(), MagneticFieldStrength=B0_TESLA, FlipAngle=GRE_FLIP,
                RepetitionTime=GRE_TR, MRAcquisitionType="3D",
                ImagingFrequency=round(GAMMA_HZ_PER_T * B0_TESLA / 1e6, 4))
    mag = volume(np.abs(sig).astype(np.float32), aff, "a.u.", "multi-echo GRE magnitude", **meta)
    phase = volume(np.angle(sig).astype(np.float32), aff, "rad", "multi-echo GRE phase (wrapped)", **meta)
    maps = {"chi": (chi, mask, "bulk isotropic susceptibility (CSF = 0)"),
            "chi_para": (sources["chi_para"], mask, "paramagnetic susceptibility (GM, iron, veins; >= 0)"),
            "chi_dia": (sources["chi_dia"], mask,
                        "diamagnetic susceptibility magnitude (myelin; >= 0, chi = chi_para - chi_dia)"),
            "local_field": (local, mask, "field of the brain's bulk susceptibility"),
            "total_field": (total, True, "shimmed field of brain and head (no microstructure offsets)"),
            "background_field": (total - local, True, "shimmed field of the head")}
    truth = {k: volume((block_average(a, 2) * m).astype(np.float32), aff, "ppm", d) for k, (a, m, d) in maps.items()}
    truth["r2"] = volume((block_average(sources["r2"], 2) * mask).astype(np.float32), aff, "1/s",
                         "spin-echo R2 of the water: inverse geometric-mean T2 (as the MESE truth)")
    if chi_separation:
        truth["r2prime"] = volume((block_average(sources["r2prime"], 2) * mask).astype(np.float32), aff, "1/s",
                                  "R2' of the tissue sources, Dr+ chi_para + Dr- chi_dia by class (veins excluded)")
    return mag, phase, {**truth, **common}

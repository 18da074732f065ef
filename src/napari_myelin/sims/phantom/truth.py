"""Ground truth: the maps every acquisition carries, and the exact DKI of the compartment mixture.

:func:`_common_truth` resamples the brain mask, tract labels, WM fraction and pathology masks onto an
acquisition's grid. The diffusion truth is analytical: each voxel is a mixture of Gaussian compartments
(:mod:`.constants`: WM intra/extra-axonal along the fibre, restricted isotropic, two GM isotropic, CSF
free water) whose cumulant expansion gives the diffusion and kurtosis tensors exactly (Jensen & Helpern
2010), with the kurtosis scaled down where the 2nd-order signal would stop decreasing before 2 b_max.
"""

from __future__ import annotations

import numpy as np

from napari_myelin.io.volume import Volume
from napari_myelin.sims.phantom.constants import (CSF_DIFFUSIVITY, GM_COMPARTMENTS, WM_EXTRA, WM_INTRA,
                                                  WM_RESTRICTED, WM_RESTRICTED_FRACTION)
from napari_myelin.sims.phantom.geometry import Pose, _Sampler


# --------------------------------------------------------------------------------------------------
# DKI of a Gaussian compartment mixture
# --------------------------------------------------------------------------------------------------
_KT_INDICES = ((0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 0, 1), (0, 0, 0, 2), (0, 1, 1, 1), (1, 1, 1, 2),
               (0, 2, 2, 2), (1, 2, 2, 2), (0, 0, 1, 1), (0, 0, 2, 2), (1, 1, 2, 2), (0, 0, 1, 2), (0, 1, 1, 2),
               (0, 1, 2, 2))


def mixture_dki(fractions: np.ndarray, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion and kurtosis tensors of a mixture of Gaussian compartments (cumulant expansion).

    ``D = sum_c f_c D_c``; ``W_ijkl = (1/MD^2) [sum_c f_c (D_ij D_kl + D_ik D_jl + D_il D_jk)_c
    - (D_ij D_kl + D_ik D_jl + D_il D_jk)]`` (Jensen & Helpern 2010), as dipy's ``multi_tensor_dki``.

    Parameters
    ----------
    fractions : ndarray, shape (N, C)
        Signal fractions (rows sum to 1).
    tensors : ndarray, shape (N, C, 3, 3)

    Returns
    -------
    dt : ndarray, shape (N, 3, 3)
    kt : ndarray, shape (N, 15)
        dipy order W1111, W2222, W3333, W1112, W1113, W1222, W2223, W1333, W2333, W1122, W1133,
        W2233, W1123, W1223, W1233.
    """
    f = fractions[..., None, None]
    dt = (f * tensors).sum(axis=1)
    md = np.trace(dt, axis1=-2, axis2=-1) / 3.0
    kt = np.zeros(dt.shape[:1] + (15,))
    md2 = np.where(md > 0, md * md, 1.0)
    for n, (i, j, k, l) in enumerate(_KT_INDICES):
        comp = (tensors[..., i, j] * tensors[..., k, l] + tensors[..., i, k] * tensors[..., j, l]
                + tensors[..., i, l] * tensors[..., j, k])
        mean = dt[:, i, j] * dt[:, k, l] + dt[:, i, k] * dt[:, j, l] + dt[:, i, l] * dt[:, j, k]
        kt[:, n] = ((fractions * comp).sum(axis=1) - mean) / md2
    return dt, kt


def _apparent_dk(dt: np.ndarray, kt: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent D(n) (N, M) and MD^2 W(n) / 1 -> (N, M) along unit directions ``dirs`` (M, 3)."""
    dn = np.einsum("mi,nij,mj->nm", dirs, dt, dirs)
    wn = np.zeros_like(dn)
    mult = {}
    from itertools import permutations

    for n, idx in enumerate(_KT_INDICES):
        mult[n] = len(set(permutations(idx)))
    for n, (i, j, k, l) in enumerate(_KT_INDICES):
        wn += mult[n] * kt[:, n:n + 1] * (dirs[:, i] * dirs[:, j] * dirs[:, k] * dirs[:, l])[None, :]
    return dn, wn


def dki_params_from_tensors(dt: np.ndarray, kt: np.ndarray) -> np.ndarray:
    """dipy's 27 DKI parameters (evals descending, evecs as columns, kt) from tensors."""
    evals, evecs = np.linalg.eigh(dt)
    evals, evecs = evals[:, ::-1], evecs[:, :, ::-1]
    return np.concatenate([evals, evecs.reshape(-1, 9), kt], axis=1)


def _compartments(fib, fw, fg, fc, axon):
    """Signal fractions (N, 6) and tensors (N, 6, 3, 3; mm^2/s) of the six diffusion compartments."""
    n = fib.shape[0]
    outer = fib[:, :, None] * fib[:, None, :]
    eye = np.repeat(np.eye(3)[None], n, axis=0)

    def tensor(par, perp):
        return (perp * eye + (par - perp) * outer) * 1e-3

    tensors = np.stack([tensor(*WM_INTRA), tensor(*WM_EXTRA), WM_RESTRICTED * 1e-3 * eye,
                        GM_COMPARTMENTS[0] * 1e-3 * eye, GM_COMPARTMENTS[1] * 1e-3 * eye,
                        CSF_DIFFUSIVITY * 1e-3 * eye], axis=1)
    wm_free = fw * (1 - WM_RESTRICTED_FRACTION)
    fr = np.stack([wm_free * axon, wm_free * (1 - axon), fw * WM_RESTRICTED_FRACTION, fg * 0.5, fg * 0.5, fc], axis=1)
    return fr, tensors


def tissue_dki(fib, fw, fg, fc, axon, *, b_max: float = 2000.0, n_quad: int = 48):
    """True DKI parameters of the phantom's compartment mixture, and their scalar maps.

    Parameters
    ----------
    fib : ndarray, shape (N, 3)
        Unit fibre direction in the frame of the gradient table (image voxel axes).
    fw, fg, fc : ndarray, shape (N,)
        Signal fractions of white-matter, grey-matter and CSF water (sum 1).
    axon : ndarray, shape (N,)
        Intra-axonal share of the (non-restricted) white-matter water.
    b_max : float
        Largest b-value (s/mm^2): the kurtosis tensor is scaled down where the 2nd-order signal
        ``exp(-b D(n) + b^2 D(n)^2 K(n) / 6)`` would stop decreasing before ``2 b_max``.

    Returns
    -------
    params : ndarray, shape (N, 27)
        dipy DKI parameters in the voxel frame.
    maps : dict
        ``fa``, ``md``, ``ad``, ``rd`` (mm^2/s) and ``mk``, ``ak``, ``rk`` computed in the fibre's
        own frame (all compartments share the fibre axis, so the tensors are axially symmetric):
        ``AK = K(e_fib)``, ``RK = K(e_perp)``, ``MK`` = the spherical mean of ``K(n)``
        (Gauss-Legendre in ``cos theta``). These equal ``dipy.reconst.dki.axial_kurtosis``,
        ``radial_kurtosis`` and ``mean_kurtosis`` (analytical) of ``params`` (checked by the
        tests), at a fraction of their cost, and are clipped as dipy clips them.
    """
    fib = np.asarray(fib, float)
    fr, tens = _compartments(fib, fw, fg, fc, axon)
    dt, kt = mixture_dki(fr, tens)
    z = np.zeros_like(fib)
    z[:, 2] = 1.0
    fr_c, tens_c = _compartments(z, fw, fg, fc, axon)
    dt_c, kt_c = mixture_dki(fr_c, tens_c)
    u, wq = np.polynomial.legendre.leggauss(n_quad)
    u, wq = 0.5 * (u + 1), 0.5 * wq  # nodes and weights on [0, 1]
    dirs = np.concatenate([np.stack([np.sqrt(1 - u * u), np.zeros_like(u), u], 1), [[0, 0, 1.0], [1.0, 0, 0]]])
    dn, wn = _apparent_dk(dt_c, kt_c, dirs)
    md = np.trace(dt_c, axis1=1, axis2=2) / 3
    dn = np.maximum(dn, 1e-12)
    excess = (md[:, None] ** 2 * wn / dn).max(axis=1) * (2 * b_max * 1.0) / 3.0
    scale = np.minimum(1.0, 1.0 / np.maximum(excess, 1e-12))
    kt *= scale[:, None]
    kn = scale[:, None] * md[:, None] ** 2 * wn / dn ** 2
    lam_par, lam_perp = dt_c[:, 2, 2], dt_c[:, 0, 0]
    evals = np.stack([lam_par, lam_perp, lam_perp], axis=1)
    from dipy.reconst import dti

    maps = {
        "fa": dti.fractional_anisotropy(evals), "md": md, "ad": lam_par, "rd": lam_perp,
        "mk": np.clip(kn[:, :n_quad] @ wq, -3.0 / 7, 3.0),
        "ak": np.clip(kn[:, n_quad], -3.0 / 7, 10.0),
        "rk": np.clip(kn[:, n_quad + 1], -3.0 / 7, 10.0),
    }
    return dki_params_from_tensors(dt, kt), maps


# --------------------------------------------------------------------------------------------------
# truth maps on an acquisition grid
# --------------------------------------------------------------------------------------------------
def _vol(data, affine, units: str, description: str, **meta) -> Volume:
    """A :class:`Volume` with ``Units`` and ``Description`` (and ``meta``) in its metadata."""
    return Volume(np.asarray(data), affine.copy(), None, {"Units": units, "Description": description, **meta}, None)


def _common_truth(s: _Sampler, affine) -> dict:
    """Truth maps of every modality: brain mask, tract labels, WM fraction, lesion and NAWM masks."""
    brain = s.linear("brain")
    mask = brain >= 0.5
    lab = s.nearest("labels").astype(np.int32) * mask
    wm = s.linear("wm") * mask
    return {
        "mask": _vol(mask, affine, "", "brain mask"),
        "labels": _vol(lab, affine, "", "HCP842-derived tract labels (see the LUT)"),
        "wm": _vol(wm.astype(np.float32), affine, "fraction", "white-matter fraction"),
        "lesion": _vol(s.linear("lesion") >= 0.5, affine, "", "demyelinating lesion mask"),
        "nawm_demyelination": _vol(s.linear("nawm_demyelination") >= 0.5, affine, "",
                                   "normal-appearing white matter with reduced myelin"),
    }


def _voxel_dki(s: _Sampler, affine: np.ndarray, pose: Pose, inside: np.ndarray, b_max: float):
    """True DKI (:func:`tissue_dki`) of an acquisition's voxels ``inside``, in its voxel axes (the .bvec's).

    The fibre direction is taken from template to scanner world by the pose rotation, then into the
    image's voxel axes; the compartment fractions are renormalised to sum 1.
    """
    rot_vox = affine[:3, :3] / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    fib_t = s.nearest("fibre").reshape(-1, 3)[inside].astype(float)
    fib = (rot_vox.T @ (pose.rotation @ fib_t.T)).T  # template world -> scanner world -> voxel axes
    fib /= np.maximum(np.linalg.norm(fib, axis=1, keepdims=True), 1e-9)
    fw, fg, fc = (s.linear(k).ravel()[inside] for k in ("diff_w", "diff_g", "diff_c"))
    axon = s.linear("axon").ravel()[inside]
    tot = np.maximum(fw + fg + fc, 1e-6)
    fw, fg, fc = fw / tot, fg / tot, fc / tot
    return tissue_dki(fib, fw, fg, fc, axon, b_max=b_max)


_DKI_UNITS = {
    "fa": ("fraction", "fractional anisotropy"), "md": ("mm^2/s", "mean diffusivity"),
    "ad": ("mm^2/s", "axial diffusivity"), "rd": ("mm^2/s", "radial diffusivity"),
    "mk": ("", "mean kurtosis"), "ak": ("", "axial kurtosis"), "rk": ("", "radial kurtosis"),
}


def _dki_truth(maps: dict, inside: np.ndarray, shp, aff, mask) -> dict:
    """Scalar DKI truth maps (computed for the ``inside`` voxels) as volumes on the grid, 0 outside ``mask``."""
    out = {}
    for name, (units, desc) in _DKI_UNITS.items():
        full = np.zeros(inside.size, np.float32)
        full[inside] = np.nan_to_num(maps[name])
        out[name] = _vol(full.reshape(shp) * mask, aff, units, desc)
    return out

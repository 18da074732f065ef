"""A small numerical head for QSM tests and the benchmark (a few ellipsoids; no data files).

Susceptibility (ppm, relative to brain tissue): outside the head air at +9.4 ppm relative to tissue,
expressed as the head at -9.4 ppm in air at 0; a frontal sinus (air) inside the head; a dark skull
shell; in the brain a cortical rim (+0.02), white matter (-0.03), two deep grey nuclei (+0.10),
ventricles (0) and a white-matter tract (-0.06). The multi-echo GRE signal is
``m(TE) = PD exp(-R2* TE) exp(i 2 pi f TE)`` with ``f`` the field of the whole head (Hz), plus complex
Gaussian noise. The truth local field is the field of the brain's own sources, inside the brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_myelin.reconst.dipole import forward_field
from napari_myelin.reconst.qsm import ppm_to_hz


@dataclass
class QSMHead:
    magnitude: np.ndarray
    phase: np.ndarray
    echo_times: np.ndarray
    field_strength: float
    affine: np.ndarray
    chi: np.ndarray  # true susceptibility in the brain (ppm), 0 outside
    local_field: np.ndarray  # true local field (ppm) in the brain
    total_field: np.ndarray  # total field (ppm) everywhere
    mask: np.ndarray  # true brain mask


def _ell(c, centre, axes):
    return sum(((c[i] - centre[i]) / axes[i]) ** 2 for i in range(3)) <= 1.0


def make_head(shape=(64, 64, 48), voxel_mm=2.0, echo_times=(0.004, 0.010, 0.016, 0.022, 0.028),
              field_strength=3.0, noise=0.005, seed=0, smooth=1.0) -> QSMHead:
    nx, ny, nz = shape
    c = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    c = [ci / (n / 2) for ci, n in zip(c, shape)]  # -1..1 across the box
    head = _ell(c, (0, 0, 0), (0.86, 0.9, 0.88))
    inner_skull = _ell(c, (0, 0, 0), (0.74, 0.8, 0.76))
    brain = _ell(c, (0, 0, 0), (0.68, 0.74, 0.7))
    sinus = _ell(c, (0, 0.55, -0.72), (0.15, 0.12, 0.07))
    wm = _ell(c, (0, 0, 0), (0.56, 0.62, 0.58))
    nuclei = _ell(c, (0.2, 0.05, 0.0), (0.08, 0.12, 0.09)) | _ell(c, (-0.2, 0.05, 0.0), (0.08, 0.12, 0.09))
    ventricles = _ell(c, (0.07, 0.0, 0.15), (0.04, 0.25, 0.07)) | _ell(c, (-0.07, 0.0, 0.15), (0.04, 0.25, 0.07))
    tract = (np.abs(c[0] - 0.35) < 0.05) & (np.abs(c[2] - 0.2) < 0.06) & wm

    chi_brain = np.zeros(shape)
    chi_brain[brain] = 0.02
    chi_brain[wm] = -0.03
    chi_brain[tract] = -0.06
    chi_brain[nuclei] = 0.10
    chi_brain[ventricles] = 0.0
    chi_brain[~brain] = 0.0
    # smooth air/tissue boundary (a staircase of 9.4 ppm rings through the brain in the FFT model)
    chi_total = -9.4 * ndimage.gaussian_filter((head & ~sinus).astype(float), smooth) + chi_brain
    b0 = (0.0, 0.0, 1.0)
    total = forward_field(chi_total, voxel_mm, b0)
    local = np.where(brain, forward_field(chi_brain, voxel_mm, b0), 0.0)

    pd = np.zeros(shape)
    r2 = np.full(shape, 30.0)
    pd[head] = 0.5
    pd[head & ~inner_skull] = 0.5
    pd[_ell(c, (0, 0, 0), (0.80, 0.86, 0.82)) & ~inner_skull] = 0.0  # skull: no signal
    pd[inner_skull & ~brain] = 0.9  # CSF rim
    r2[inner_skull & ~brain] = 5.0
    pd[brain] = 0.8
    r2[brain] = 20.0
    pd[wm] = 0.7
    r2[wm] = 25.0
    pd[nuclei] = 0.75
    r2[nuclei] = 40.0
    pd[ventricles] = 1.0
    r2[ventricles] = 5.0
    pd[sinus] = 0.0
    te = np.asarray(echo_times, float)
    f_hz = ppm_to_hz(total, field_strength)
    rng = np.random.default_rng(seed)
    sig = pd[..., None] * np.exp(-r2[..., None] * te) * np.exp(2j * np.pi * f_hz[..., None] * te)
    sig = sig + noise * (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -np.array(shape) * voxel_mm / 2
    return QSMHead(
        np.abs(sig).astype(np.float32), np.angle(sig).astype(np.float32), te, field_strength, affine,
        np.where(brain, chi_brain, 0.0), local, total, brain,
    )

"""Scanner fields shared by the acquisitions of one session: transmit B1, receive bias, noise.

* **Transmit field** (ratio of actual to nominal flip angle), smooth, brightest near the head centre
  as at 3 T (Sacolick et al. 2010), with a left-right / anterior-posterior tilt::

      B1(r) = 1 - G/2 + G exp(-|d|^2) + tilt . (r - c) / 100 mm,    d = (r - c) / (80, 100, 80) mm

  ``G`` (central gain) and ``tilt`` are drawn per subject (:data:`.constants.B1_CENTRE_GAIN`,
  ``B1_TILT``); ``c`` is the head centre in the scanner.
* **Measured B1 map**: the true field at the voxels of its own coarse grid, blurred by the
  mapping method's point-spread function (Gaussian, :data:`.constants.B1_BLUR_FWHM`) and multiplied by
  ``1 + N(0, B1_NOISE)`` noise, over the head (the brain mask dilated by 10 mm), zero elsewhere.
* **Receive bias** of the phased-array coil (Volz et al. 2012), the same for every magnitude series
  of the session: ``exp(a (q . d + d^T Q d / 2))`` normalised to a mean of 1 over the brain
  (``a`` from :data:`.constants.RECEIVE_BIAS`, ``q``, ``Q`` random).
* **Noise**: magnitude series get Rician noise (complex Gaussian noise of SD ``sigma`` in both
  channels, magnitude taken); ``sigma`` = mean brain signal of the series' reference volume / SNR.

References
----------
Sacolick LI et al. Magn Reson Med 63:1315-1322 (2010).  Volz S et al. Magn Reson Med 68:74-85 (2012).
Gudbjartsson H, Patz S. The Rician distribution of noisy MRI data. Magn Reson Med 34:910-914 (1995).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_myelin.sims.independent.constants import B1_BLUR_FWHM, B1_CENTRE_GAIN, B1_NOISE, B1_TILT, RECEIVE_BIAS

_B1_SCALE = np.array([80.0, 100.0, 80.0])


@dataclass
class Fields:
    """Transmit and receive fields of one session (scanner coordinates, mm)."""

    centre: np.ndarray  # (3,) head centre in the scanner
    b1_gain: float
    b1_tilt: np.ndarray  # (3,)
    rx_amplitude: float
    rx_linear: np.ndarray  # (3,)
    rx_quadratic: np.ndarray  # (3, 3) symmetric
    rx_phase: np.ndarray  # (4,): constant and gradient of the receive phase

    def transmit(self, world: np.ndarray) -> np.ndarray:
        """True B1 ratio at scanner points ``world`` (3, N)."""
        d = (world - self.centre[:, None]) / _B1_SCALE[:, None]
        tilt = self.b1_tilt @ (world - self.centre[:, None]) / 100.0
        return 1.0 - 0.5 * self.b1_gain + self.b1_gain * np.exp(-(d * d).sum(axis=0)) + tilt

    def receive(self, world: np.ndarray) -> np.ndarray:
        """Receive sensitivity (unnormalised) at scanner points ``world`` (3, N)."""
        d = (world - self.centre[:, None]) / 100.0
        quad = np.einsum("in,ij,jn->n", d, self.rx_quadratic, d)
        return np.exp(self.rx_amplitude * (self.rx_linear @ d + 0.5 * quad))

    def receive_phase(self, world: np.ndarray) -> np.ndarray:
        """Smooth phase (rad) of the combined receive coils at scanner points ``world`` (3, N)."""
        d = (world - self.centre[:, None]) / 100.0
        return 0.5 * self.rx_phase[0] + 0.4 * (self.rx_phase[1:] @ d)


def draw_fields(rng: np.random.Generator, centre: np.ndarray) -> Fields:
    """Draw the session's fields (in a fixed order)."""
    q = rng.normal(0.0, 1.0, (3, 3))
    return Fields(centre=np.asarray(centre, float), b1_gain=float(rng.uniform(*B1_CENTRE_GAIN)),
                  b1_tilt=rng.uniform(-B1_TILT, B1_TILT, 3), rx_amplitude=float(rng.uniform(*RECEIVE_BIAS)),
                  rx_linear=rng.normal(0.0, 1.0, 3), rx_quadratic=0.5 * (q + q.T), rx_phase=rng.uniform(-1, 1, 4))


def measured_b1(fields: Fields, world: np.ndarray, shape, voxel_mm, head: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(measured, true) B1 maps on a grid of voxel centres ``world`` (3, N) and ``shape``."""
    true = fields.transmit(world).reshape(shape)
    sigma_vox = B1_BLUR_FWHM / 2.3548 / np.asarray(voxel_mm, float)
    blurred = ndi.gaussian_filter(true, sigma_vox, mode="nearest")
    measured = blurred * (1.0 + B1_NOISE * rng.standard_normal(shape)) * head
    return measured.astype(np.float32), true.astype(np.float32)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``|signal + n_re + i n_im|`` with ``n ~ N(0, sigma)`` (float32); no noise when ``sigma`` is 0."""
    signal = np.asarray(signal, np.float32)
    if sigma == 0:
        return signal
    re = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)


def noise_sigma(reference: np.ndarray, mask: np.ndarray, snr: float) -> float:
    """``mean(reference[mask]) / snr`` (0 for an infinite SNR)."""
    return float(reference[mask].mean() / snr) if np.isfinite(snr) else 0.0

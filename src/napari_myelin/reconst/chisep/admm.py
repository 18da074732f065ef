"""The chi-separation inverse problem, solved by ADMM with closed-form FFT and per-voxel updates.

Unknowns: the paramagnetic susceptibility ``p = chi_para >= 0`` and the diamagnetic magnitude
``q = chi_dia = -chi_neg >= 0`` (ppm), zero outside the mask ``M``. Data: the local field ``f`` (ppm of
B0) and the reversible relaxation expressed in ppm, ``r = R2' / Dr+``, with ``a = 1`` and
``b = Dr- / Dr+`` the relative relaxometric constants. :func:`chisep_admm` minimises

.. math::

    \\tfrac12 \\lVert D (p - q) - f \\rVert_2^2
    + \\tfrac12 \\sum_{\\mathbf r} c(\\mathbf r) \\bigl(a\\,p + b\\,q - r\\bigr)^2
    + \\lambda \\bigl(\\lVert \\nabla p \\rVert_1 + \\lVert \\nabla q \\rVert_1\\bigr),
    \\qquad p, q \\ge 0,\\; p = q = 0 \\text{ outside } M,

with ``D`` the dipole convolution and ``c`` the R2' weight (``w^2`` where R2' is known, 0 elsewhere).
Splitting ``z = grad p``, ``grad q`` (TV) and ``y = (p, q)`` (R2' term and constraints), each ADMM
iteration is

* the field step in k-space, decoupled in the sum ``s = p - q`` (the total susceptibility, which the
  field sees) and ``t = p + q`` (which only R2' sees):
  ``s = (2 D F f + B_p - B_q) / (2 D^2 + rho |E|^2 + mu)``, ``t = (B_p + B_q) / (rho |E|^2 + mu)`` with
  ``B = F{rho grad^T (z - u) + mu (y - v)}`` and ``|E|^2`` the symbol of ``grad^T grad``;
* the TV step ``z = soft(grad x + u, lam / rho)`` (the in-place form of :func:`~napari_myelin.reconst.qsm.tv_admm`);
* the per-voxel step: the two-variable quadratic program of :func:`box_qp` (R2' fit + non-negativity);
* the scaled dual updates.

The reference of the susceptibility is not arbitrary here: ``D`` is blind to a constant, but R2' fixes
``a p + b q`` absolutely and the constraints then pin ``p - q`` wherever one source vanishes (veins,
pure white matter), as noted by Shin et al. (2021).

References
----------
Shin HG, Lee J, Yun YH, et al. chi-separation: magnetic susceptibility source separation toward iron and
myelin mapping in the brain. NeuroImage 240:118371 (2021).
Bilgic B et al. Fast quantitative susceptibility mapping with L1-regularization and automatic parameter
selection. MRM 72:1444-1459 (2014).
Boyd S et al. Distributed optimization and statistical learning via the alternating direction method of
multipliers. Found Trends Mach Learn 3:1-122 (2011).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from napari_myelin.reconst.dipole import dipole_kernel
from napari_myelin.reconst.inverse import _fast_box, _grad_into, _grad_symbol, _grad_t_into, _Grid, _voxel
from napari_myelin.utils.progress import step


def box_qp(tp, tq, r, c, mu: float, b: float = 1.0):
    """Per-voxel minimiser of ``c/2 (p + b q - r)^2 + mu/2 ((p - tp)^2 + (q - tq)^2)`` over ``p, q >= 0``.

    Closed form of a convex two-variable quadratic program: the unconstrained minimum
    ``e = (tp + b tq - r) / (1 + c (1 + b^2) / mu)``, ``p = tp - c e / mu``, ``q = tq - c b e / mu`` where it
    is feasible, else the better of the two faces ``p = 0`` (``q = max(0, (mu tq + c b r) / (mu + c b^2))``)
    and ``q = 0`` (``p = max(0, (mu tp + c r) / (mu + c))``); the origin is a corner of both faces.

    Returns
    -------
    p, q : ndarray
        In the floating type of the inputs.
    """
    e = (tp + b * tq - r) / (1.0 + c * (1.0 + b * b) / mu)
    p_in, q_in = tp - (c / mu) * e, tq - (c * b / mu) * e
    q_face = np.maximum((mu * tq + c * b * r) / (mu + c * b * b), 0.0)
    p_face = np.maximum((mu * tp + c * r) / (mu + c), 0.0)
    # objective on each face, without the terms they share
    f_p0 = c * (b * q_face - r) ** 2 + mu * (tp * tp + (q_face - tq) ** 2)
    f_q0 = c * (p_face - r) ** 2 + mu * ((p_face - tp) ** 2 + tq * tq)
    use_p0 = f_p0 <= f_q0
    inside = (p_in >= 0) & (q_in >= 0)
    p = np.where(inside, p_in, np.where(use_p0, 0.0, p_face))
    q = np.where(inside, q_in, np.where(use_p0, q_face, 0.0))
    return p, q


class _Problem:
    """Kernels, data and ADMM state on the mask's padded bounding box (float32, in place)."""

    def __init__(self, field, r, weight, mask, voxel, bdir, *, rho, mu, dia_ratio, margin, pad):
        self.box = _fast_box(mask, margin)
        m = mask[self.box]
        self.grid = g = _Grid(m.shape, pad)
        d = dipole_kernel(g.full, voxel, bdir, real=True, dtype=np.float32)
        e2 = _grad_symbol(g.full)
        self.inv_s = (1.0 / (2.0 * d * d + np.float32(rho) * e2 + np.float32(mu))).astype(np.float32)
        self.inv_t = (1.0 / (np.float32(rho) * e2 + np.float32(mu))).astype(np.float32)
        self.inside = self._pad(m, bool)
        self.r = self._pad(np.where(m, r[self.box], 0))
        self.c = self._pad(np.where(m, weight[self.box], 0))
        self.base = sfft.rfftn(self._pad(np.where(m, field[self.box], 0)), workers=g.workers)
        self.base *= 2.0 * d
        self.rho, self.mu, self.b = np.float32(rho), np.float32(mu), float(dia_ratio)
        zeros = np.zeros(g.full, np.float32)
        self.x = [zeros.copy(), zeros.copy()]  # p, q (field step)
        self.y = [zeros.copy(), zeros.copy()]  # p, q (feasible: R2' step)
        self.t = [zeros.copy(), zeros.copy()]  # x + v of the last R2' step (y - v = 2y - t)
        self.u = [np.zeros((3,) + g.full, np.float32) for _ in range(2)]  # TV duals
        self.gv = [np.zeros((3,) + g.full, np.float32) for _ in range(2)]  # grad x + u of the last TV step
        self.div = zeros

    def _pad(self, a, dtype=np.float32):
        out = np.zeros(self.grid.full, dtype)
        out[self.grid.sl] = a
        return out

    def field_step(self) -> float:
        """The k-space update of ``(p, q)``; returns the relative change of ``x``."""
        g, spec = self.grid, []
        for k in range(2):
            gv, u = self.gv[k], self.u[k]
            gv -= u
            gv -= u  # z - u = (grad x + u_old) - 2 u
            _grad_t_into(gv, self.div)
            self.div *= self.rho
            self.div += self.mu * (2.0 * self.y[k] - self.t[k])  # mu (y - v)
            spec.append(sfft.rfftn(self.div, workers=g.workers))
        s = sfft.irfftn((self.base + spec[0] - spec[1]) * self.inv_s, s=g.full, workers=g.workers)
        t = sfft.irfftn((spec[0] + spec[1]) * self.inv_t, s=g.full, workers=g.workers)
        new = [0.5 * (t + s), 0.5 * (t - s)]
        change = sum(float(np.linalg.norm(n - o)) for n, o in zip(new, self.x))
        change /= max(sum(float(np.linalg.norm(n)) for n in new), 1e-12)
        self.x = [n.astype(np.float32, copy=False) for n in new]
        return change

    def tv_step(self, thr: np.float32) -> None:
        """``z = soft(grad x + u, thr)``, ``u <- clip(grad x + u, -thr, thr)`` (z kept implicitly in ``gv``)."""
        for k in range(2):
            _grad_into(self.x[k], self.gv[k])
            self.gv[k] += self.u[k]
            np.clip(self.gv[k], -thr, thr, out=self.u[k])

    def r2prime_step(self) -> None:
        """The per-voxel R2' fit with the constraints (:func:`box_qp`); zero outside the mask."""
        for k in range(2):
            self.t[k] += self.x[k]
            self.t[k] -= self.y[k]  # t = x + v with v = t_old - y_old
        p, q = box_qp(self.t[0], self.t[1], self.r, self.c, float(self.mu), self.b)
        self.y = [np.where(self.inside, p, 0).astype(np.float32), np.where(self.inside, q, 0).astype(np.float32)]

    def result(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """The feasible ``(p, q)`` pasted back on the full grid ``shape``."""
        out = []
        for y in self.y:
            full = np.zeros(shape, np.float32)
            full[self.box] = y[self.grid.sl]
            out.append(full)
        return out[0], out[1]


def chisep_admm(
    local_field_ppm: np.ndarray,
    r2prime_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm,
    b0_dir=(0.0, 0.0, 1.0),
    *,
    weight: np.ndarray | float = 1.0,
    dia_ratio: float = 1.0,
    lam: float = 1e-4,
    rho: float = 2e-2,
    mu: float = 2e-2,
    max_iter: int = 300,
    tol: float = 1e-3,
    margin: int = 4,
    pad=16,
    progress=None,
    cancel=None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Paramagnetic and diamagnetic susceptibility (ppm) from the local field and R2' (module docstring).

    Parameters
    ----------
    local_field_ppm : ndarray (X, Y, Z)
        Local (tissue) field, ppm of B0.
    r2prime_ppm : ndarray (X, Y, Z)
        ``R2' / Dr+`` (ppm): R2' (1/s) divided by the paramagnetic relaxometric constant (Hz/ppm).
    mask : ndarray of bool
        Voxels where the susceptibility is estimated (zero outside).
    voxel_size_mm, b0_dir
        Voxel size (mm) and B0 in the voxel axes (:func:`~napari_myelin.reconst.dipole.b0_direction`).
    weight : ndarray or float
        Per-voxel weight ``w`` of the R2' term relative to the field term (``c = w^2``; 0 where R2' is
        unknown).
    dia_ratio : float
        ``b = Dr- / Dr+``.
    lam : float
        TV weight for 1 mm voxels, divided by the geometric-mean voxel size in mm (as
        :func:`~napari_myelin.reconst.qsm.tv_admm`: the same continuous problem at any resolution).
    rho, mu : float
        ADMM penalties of the TV split and of the R2'/constraint split.
    max_iter, tol : int, float
        Stop after ``max_iter`` iterations or when the relative change of ``(p, q)`` is below ``tol``.
    margin, pad : int
        Bounding-box margin and zero padding (voxels).

    Returns
    -------
    chi_para, chi_dia : ndarray (X, Y, Z), float32
        Both >= 0 (ppm); the diamagnetic susceptibility is ``-chi_dia``.
    iterations : int
    """
    mask = np.asarray(mask, bool)
    voxel = _voxel(voxel_size_mm)
    thr = np.float32(lam / float(np.prod(voxel)) ** (1.0 / 3.0) / rho)
    w = np.broadcast_to(np.asarray(weight, np.float32) ** 2, mask.shape)
    prob = _Problem(np.asarray(local_field_ppm, np.float32), np.asarray(r2prime_ppm, np.float32), w, mask,
                    voxel, b0_dir, rho=rho, mu=mu, dia_ratio=dia_ratio, margin=margin, pad=pad)
    it = 0
    for it in range(1, max_iter + 1):
        change = prob.field_step()
        prob.tv_step(thr)
        prob.r2prime_step()
        step(progress, cancel, it / max_iter, f"chi-separation ADMM iteration {it}")
        if it > 5 and change < tol:
            break
    para, dia = prob.result(mask.shape)
    return para, dia, it

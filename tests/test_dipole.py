"""The dipole kernel and forward field against closed forms (sphere, infinite cylinder), oblique grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_myelin.reconst.dipole import (
    b0_direction,
    cylinder_field,
    dipole_kernel,
    forward_field,
    padded_shape,
    sphere_field,
)
from napari_myelin.utils.errors import InputError

from .conftest import oblique_affine


def partial_volume(inside, coords_fn, shape, ss=4):
    """Fraction of each voxel inside a shape (ss^3 sub-samples): limits staircase error."""
    out = np.zeros(shape)
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    for ox in offs:
        for oy in offs:
            for oz in offs:
                out += inside(coords_fn(ox, oy, oz))
    return out / ss**3


def grid_coords(shape, affine, offset=(0.0, 0.0, 0.0)):
    ijk = np.stack(np.meshgrid(*[np.arange(n) + o for n, o in zip(shape, offset)], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def test_kernel_values():
    d = dipole_kernel((8, 8, 8), 1.0, (0, 0, 1))
    assert d[0, 0, 0] == 0.0
    assert d[0, 0, 1] == pytest.approx(1 / 3 - 1)  # k along B0
    assert d[1, 0, 0] == pytest.approx(1 / 3)  # k perpendicular to B0
    assert d[1, 0, 1] == pytest.approx(1 / 3 - 0.5)  # 45 degrees
    # anisotropic voxel: k in cycles/mm, k = (1/(8*2), 0, 1/(8*1)) -> cos^2 = 0.8
    d = dipole_kernel((8, 8, 8), (2.0, 1.0, 1.0), (0, 0, 1))
    assert d[1, 0, 1] == pytest.approx(1 / 3 - 0.8)
    # the half spectrum is the same numbers
    full = dipole_kernel((8, 6, 10), (1, 1.5, 2), (0.2, 0.3, 0.9))
    half = dipole_kernel((8, 6, 10), (1, 1.5, 2), (0.2, 0.3, 0.9), real=True)
    np.testing.assert_allclose(full[..., :5], half[..., :5])  # (the Nyquist plane differs in sign only)
    assert padded_shape((100, 60, 30), "auto") >= (150, 90, 45)


@pytest.mark.parametrize("b0", [(0.0, 0.0, 1.0), (0.3, -0.2, 0.93)])
def test_sphere_field_closed_form(b0):
    n, a = 64, 8.0
    aff = np.eye(4)
    aff[:3, 3] = -n / 2 + 0.5
    chi = partial_volume(lambda c: (c**2).sum(-1) <= a * a, lambda *o: grid_coords((n,) * 3, aff, o), (n,) * 3)
    field = forward_field(0.1 * chi, 1.0, b0)
    coords = grid_coords((n,) * 3, aff)
    ref = sphere_field(coords, a, 0.1, b0)
    r = np.linalg.norm(coords, axis=-1)
    out = (r > a + 1.5) & (r < 3 * a)
    rel_rms = np.sqrt(np.mean((field[out] - ref[out]) ** 2)) / np.sqrt(np.mean(ref[out] ** 2))
    assert rel_rms < 0.03
    # inside: zero (Lorentz-sphere convention), up to the DC offset and Gibbs ringing
    inside = r < a - 1.5
    assert abs(field[inside].mean()) < 0.01 * 0.1
    assert np.abs(field[inside]).max() < 0.05 * 0.1
    # the peak field at the poles: 2 chi / 3 at the surface, measured 2 voxels out
    pole = np.asarray(b0) / np.linalg.norm(b0) * (a + 2)
    i = np.unravel_index(np.argmin(((coords - pole) ** 2).sum(-1)), r.shape)
    assert field[i] == pytest.approx(ref[i], rel=0.05)


@pytest.mark.parametrize("theta_deg", [0.0, 35.0, 54.7356, 90.0])
def test_infinite_cylinder_closed_form(theta_deg):
    # cylinder along the voxel z axis, periodic (pad=0) along z so that it is truly infinite
    n, nz, a, chi0 = 128, 4, 6.0, 0.2
    aff = np.eye(4)
    aff[:3, 3] = [-n / 2 + 0.5, -n / 2 + 0.5, 0.0]
    chi = partial_volume(
        lambda c: c[..., 0] ** 2 + c[..., 1] ** 2 <= a * a, lambda *o: grid_coords((n, n, nz), aff, o), (n, n, nz)
    )
    th = np.radians(theta_deg)
    b0 = np.array([np.sin(th) * np.cos(0.4), np.sin(th) * np.sin(0.4), np.cos(th)])
    field = forward_field(chi0 * chi, 1.0, b0, pad=(n // 2, n // 2, 0))
    coords = grid_coords((n, n, nz), aff)
    ref = cylinder_field(coords, a, chi0, (0, 0, 1), b0)
    rho = np.hypot(coords[..., 0], coords[..., 1])
    inside = rho < a - 2
    expected_inside = chi0 / 6 * (3 * np.cos(th) ** 2 - 1)
    assert field[inside].mean() == pytest.approx(expected_inside, abs=0.004 * chi0)
    out = (rho > a + 1.5) & (rho < 3 * a)
    err = np.sqrt(np.mean((field[out] - ref[out]) ** 2))
    scale = chi0 / 2 * np.sin(th) ** 2 * (a / (a + 1.5)) ** 2
    assert err < 0.05 * max(scale, 1e-3 * chi0) + 0.002 * chi0
    if theta_deg == 0:
        assert np.abs(field[out]).max() < 0.002 * chi0  # no field outside a cylinder along B0


def test_b0_direction_and_oblique_slab():
    # plumb RAS grid: B0 along the third voxel axis; LPS flips do not matter for a squared kernel
    np.testing.assert_allclose(b0_direction(np.diag([1.0, 2.0, 3.0, 1.0])), [0, 0, 1], atol=1e-12)
    aff = oblique_affine(zooms=(1.0, 1.0, 1.5), angle_deg=20.0, lps=True)
    b = b0_direction(aff)
    rot = aff[:3, :3] / np.sqrt((aff[:3, :3] ** 2).sum(0))
    np.testing.assert_allclose(rot @ b, [0, 0, 1], atol=1e-12)
    assert np.degrees(np.arccos(abs(b[2]))) == pytest.approx(20.0, abs=1e-9)

    # the field of a sphere imaged on an oblique, anisotropic slab equals the closed form in world
    # coordinates with B0 = world z: the kernel is rotated, nothing is resampled.
    shape, a = (56, 56, 40), 7.0
    centre = aff[:3, :3] @ (np.array(shape) / 2 - 0.5) + aff[:3, 3]
    chi = partial_volume(
        lambda c: ((c - centre) ** 2).sum(-1) <= a * a, lambda *o: grid_coords(shape, aff, o), shape
    )
    field = forward_field(0.1 * chi, np.sqrt((aff[:3, :3] ** 2).sum(0)), b)
    world = grid_coords(shape, aff) - centre
    ref = sphere_field(world, a, 0.1, (0, 0, 1))
    r = np.linalg.norm(world, axis=-1)
    out = (r > a + 2) & (r < 2.5 * a)
    rel_rms = np.sqrt(np.mean((field[out] - ref[out]) ** 2)) / np.sqrt(np.mean(ref[out] ** 2))
    assert rel_rms < 0.05
    # using the wrong (unrotated) direction is measurably worse: the test can tell the difference
    wrong = forward_field(0.1 * chi, np.sqrt((aff[:3, :3] ** 2).sum(0)), (0, 0, 1))
    rel_wrong = np.sqrt(np.mean((wrong[out] - ref[out]) ** 2)) / np.sqrt(np.mean(ref[out] ** 2))
    assert rel_wrong > 3 * rel_rms


def test_forward_field_batch_and_errors():
    rng = np.random.default_rng(0)
    chi = rng.normal(size=(12, 10, 8, 2))
    f = forward_field(chi, (1, 1, 2), (0, 0.6, 0.8))
    np.testing.assert_allclose(f[..., 1], forward_field(chi[..., 1], (1, 1, 2), (0, 0.6, 0.8)), atol=1e-12)
    # linear and self-adjoint (D is real and even): <D x, y> = <x, D y> with periodic FFT (pad 0)
    x, y = rng.normal(size=(2, 12, 10, 8))
    assert np.vdot(forward_field(x, 1, (0, 0, 1), pad=0), y) == pytest.approx(
        np.vdot(x, forward_field(y, 1, (0, 0, 1), pad=0)), rel=1e-10
    )
    with pytest.raises(InputError, match="b0_dir"):
        dipole_kernel((4, 4, 4), 1.0, (0, 0, 0))
    with pytest.raises(InputError, match="voxel_size_mm"):
        dipole_kernel((4, 4, 4), (1.0, -1.0, 1.0), (0, 0, 1))
    with pytest.raises(InputError, match="chi"):
        forward_field(np.zeros((4, 4)), 1.0)

"""The plugin inside a real napari viewer: manifest, reader through napari, scale and metadata."""

from __future__ import annotations

import numpy as np

from .conftest import oblique_affine


def test_viewer_opens_nifti_through_plugin(make_napari_viewer, write_nifti):
    viewer = make_napari_viewer()
    aff = oblique_affine(zooms=(1.0, 1.5, 3.0), angle_deg=0.0, lps=False)
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = write_nifti("t1.nii.gz", data, aff, {"RepetitionTime": 0.015})
    layers = viewer.open(str(path), plugin="napari-myelin")
    layer = layers[0]
    np.testing.assert_allclose(layer.scale, [3.0, 1.5, 1.0])
    np.testing.assert_allclose(layer.translate, aff[:3, 3][::-1])
    assert layer.metadata["napari_myelin"]["sidecar"]["RepetitionTime"] == 0.015
    np.testing.assert_array_equal(layer.data, data.transpose(2, 1, 0))
    # napari world coordinate of voxel (i, j, k) is the affine's RAS position (in z, y, x order)
    world = layer.data_to_world((2, 3, 1))
    np.testing.assert_allclose(world, (aff @ [1, 3, 2, 1])[:3][::-1])

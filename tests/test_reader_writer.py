"""npe2 reader/writer: display geometry and exact round trips (oblique, anisotropic, LPS, 4D)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_myelin._reader import napari_get_reader
from napari_myelin._writer import write_nifti as save_layer
from napari_myelin.io.volume import load_volume

from .conftest import oblique_affine


def _read(path):
    reader = napari_get_reader(str(path))
    assert reader is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = reader(str(path))
    return layers, [str(w.message) for w in caught]


@pytest.mark.parametrize("shape", [(6, 7, 5), (6, 7, 5, 4)])
def test_round_trip_oblique_anisotropic_lps(tmp_path, write_nifti, shape):
    rng = np.random.default_rng(0)
    data = rng.normal(size=shape).astype(np.float32)
    aff = oblique_affine(zooms=(1.2, 0.9, 2.5), angle_deg=12.0, lps=True)
    src = write_nifti("src.nii.gz", data, aff, {"EchoTime": [0.01, 0.02, 0.03, 0.04]})
    layers, messages = _read(src)
    (layer_data, attrs, kind), = layers
    assert kind == "image"
    assert any("oblique by 12.0 deg" in m for m in messages)
    # LPS voxel axes are shown flipped to RAS (x and y reversed), then in (z, y, x) order
    expected = data[::-1, ::-1, :].transpose((2, 1, 0) + tuple(range(3, data.ndim)))
    if data.ndim == 4:
        expected = np.moveaxis(expected, 3, 0)
        assert attrs["scale"][0] == 1.0 and attrs["translate"][0] == 0.0
    np.testing.assert_array_equal(layer_data, expected)
    np.testing.assert_allclose(np.asarray(attrs["scale"])[-3:], [2.5, 0.9, 1.2], rtol=1e-6)
    meta = attrs["metadata"]["napari_myelin"]
    np.testing.assert_allclose(meta["affine"], aff, atol=1e-6)
    assert meta["sidecar"]["EchoTime"] == [0.01, 0.02, 0.03, 0.04]

    out = tmp_path / "out.nii.gz"
    save_layer(str(out), layer_data, attrs)
    back = load_volume(out)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)


def test_translate_is_world_position_of_first_displayed_voxel(write_nifti):
    aff = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS storage
    aff[:3, 3] = [90.0, -126.0, -72.0]
    src = write_nifti("las.nii.gz", np.zeros((4, 5, 6), np.float32), aff)
    (_, attrs, _), = _read(src)[0]
    # first RAS voxel is stored voxel (3, 0, 0): x = 90 - 2*3 = 84
    np.testing.assert_allclose(attrs["translate"], [-72.0, -126.0, 84.0])
    np.testing.assert_allclose(attrs["scale"], [3.0, 2.0, 2.0])


def test_integer_file_with_lut_becomes_named_labels(tmp_path, write_nifti):
    labels = np.zeros((5, 5, 5), np.int16)
    labels[1:3, 1:3, 1:3] = 3
    labels[3:, 3:, 3:] = 7
    src = write_nifti("tracts.nii.gz", labels, np.diag([1.5, 1.5, 1.5, 1]))
    (tmp_path / "tracts.tsv").write_text("index\tname\n3\tGenu of corpus callosum\n7\tCingulum L\n")
    (data, attrs, kind), = _read(src)[0]
    assert kind == "labels"
    assert set(np.unique(data)) == {0, 3, 7}
    assert list(attrs["features"]["name"]) == ["Genu of corpus callosum", "Cingulum L"]
    out = tmp_path / "labels_out.nii.gz"
    save_layer(str(out), data, attrs)
    np.testing.assert_array_equal(load_volume(out).data, labels)


def test_fsl_txt_lut(tmp_path, write_nifti):
    src = write_nifti("atlas.nii.gz", np.arange(27, dtype=np.int32).reshape(3, 3, 3) % 3)
    (tmp_path / "atlas.txt").write_text("# FSL style\n1 Left thing\n2 Right thing\n")
    (_, attrs, kind), = _read(src)[0]
    assert kind == "labels"
    assert attrs["features"].set_index("index").loc[2, "name"] == "Right thing"


def test_reader_declines_other_files():
    assert napari_get_reader("image.tif") is None

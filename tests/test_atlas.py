"""Shipped atlas: LUT content, grids, tissue probabilities, user labels and the JHU loader."""

import numpy as np
import pandas as pd
import pytest

from napari_myelin.align import atlas
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import save_volume


def test_lut_has_callosal_parts_and_both_hemispheres():
    lut = atlas.tract_lut()
    assert list(lut.columns[:4]) == ["index", "name", "abbreviation", "hemisphere"]
    names = set(lut["name"])
    for part in ("genu", "body", "splenium"):
        assert f"Corpus Callosum {part}" in names
    assert not lut["name"].str.contains("Corpus_Callosum|CN", regex=True).any()  # split, nerves dropped
    left = lut[lut["hemisphere"] == "L"]["abbreviation"].str[:-2]
    right = lut[lut["hemisphere"] == "R"]["abbreviation"].str[:-2]
    assert len(left) == len(right) >= 25
    assert set(left) == set(right)
    assert lut["index"].is_unique and lut["index"].min() == 1


@pytest.mark.parametrize("res", [1, 2])
def test_labels_share_the_template_grid(res):
    t1 = atlas.load_template(res)
    labels, lut = atlas.load_tract_atlas(res)
    assert labels.shape == t1.shape
    np.testing.assert_allclose(labels.affine, t1.affine)
    np.testing.assert_allclose(t1.zooms, [res] * 3)
    present = set(np.unique(labels.data)) - {0}
    assert present <= set(lut["index"])
    assert len(present) >= 55


def test_labels_lie_in_white_matter_and_callosum_is_ordered_front_to_back():
    labels, lut = atlas.load_tract_atlas(2)
    wm = atlas.load_tissue_probability("wm", 2).data
    lab = labels.data > 0
    assert wm[lab].min() >= 0.5 - 1e-6
    ijk = np.indices(labels.shape).reshape(3, -1)
    y = (labels.affine[:3, :3] @ ijk + labels.affine[:3, 3:4])[1].reshape(labels.shape)
    mean_y = {a: y[labels.data == lut.loc[lut.abbreviation == a, "index"].item()].mean() for a in ("GCC", "BCC", "SCC")}
    assert mean_y["GCC"] > mean_y["BCC"] > mean_y["SCC"]
    x = (labels.affine[:3, :3] @ ijk + labels.affine[:3, 3:4])[0].reshape(labels.shape)
    for side, sign in (("L", -1), ("R", 1)):
        idx = lut.loc[lut.abbreviation == f"CST_{side}", "index"].item()
        assert sign * x[labels.data == idx].mean() > 10  # RAS: left is negative x


def test_tissue_probabilities_sum_to_brain():
    wm, gm, csf = (atlas.load_tissue_probability(t, 2).data for t in ("wm", "gm", "csf"))
    brain = atlas.load_brain_mask(2).data
    for p in (wm, gm, csf):
        assert p.min() >= 0 and p.max() <= 1
    total = wm + gm + csf
    assert np.all(total[brain] >= 1 - 1e-5)
    assert 550 < wm.sum() * 8e-3 < 800  # ml of white matter in the adult template
    wm1 = atlas.load_tissue_probability("wm", 1)
    assert wm1.shape == atlas.load_template(1).shape
    assert abs(wm1.data.sum() * 1e-3 - wm.sum() * 8e-3) < 10


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError):
        atlas.load_template(3)
    with pytest.raises(InputError):
        atlas.load_tissue_probability("bone")


def test_user_labels_with_lut(tmp_path):
    data = np.zeros((6, 6, 6), np.int16)
    data[1:3, 1:3, 1:3] = 4
    data[3:5, 3:5, 3:5] = 7
    path = save_volume(data, tmp_path / "rois.nii.gz", np.diag([2.0, 2.0, 2.0, 1.0]))
    table = pd.DataFrame({"index": [4, 7], "name": ["Tract A left", "Tract B right"]})
    vol, lut = atlas.load_labels(path, table)
    assert vol.data.dtype == np.int32 and (vol.data == 7).sum() == 8
    assert list(lut["hemisphere"]) == ["L", "R"]
    (tmp_path / "rois.tsv").write_text("index\tname\n4\tA\n7\tB\n")
    _, found = atlas.load_labels(path)
    assert list(found["name"]) == ["A", "B"]
    with pytest.raises(InputError):
        atlas.load_labels(path, pd.DataFrame({"index": [4], "name": ["A"]}))


def test_jhu_reads_fsl_or_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("FSLDIR", raising=False)
    with pytest.raises(InputError, match="FSL"):
        atlas.load_jhu_labels()
    # a minimal FSL-like tree (synthetic data, not the JHU atlas)
    root = tmp_path / "fsl" / "data" / "atlases"
    (root / "JHU").mkdir(parents=True)
    data = np.zeros((4, 4, 4), np.int16)
    data[1, 1, 1], data[2, 2, 2] = 1, 2
    save_volume(data, root / "JHU" / "JHU-ICBM-labels-1mm.nii.gz", np.eye(4))
    (root / "JHU-labels.xml").write_text(
        '<atlas><data><label index="0" x="0" y="0" z="0">Genu of corpus callosum</label>'
        '<label index="1" x="0" y="0" z="0">Corticospinal tract R</label></data></atlas>'
    )
    monkeypatch.setenv("FSLDIR", str(tmp_path / "fsl"))
    vol, lut = atlas.load_jhu_labels(1)
    assert set(np.unique(vol.data)) == {0, 1, 2}
    assert list(lut["index"]) == [1, 2] and list(lut["hemisphere"]) == ["M", "R"]

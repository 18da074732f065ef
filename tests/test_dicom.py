"""DICOM in: synthetic series of every kind (written with pydicom) converted by dcm2niix, named as BIDS,
read back by the pipeline's finders; the CLI's refusals; the napari DICOM reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_myelin.cli import main
from napari_myelin.io.bids import find_subject, load_multi
from napari_myelin.io.dicom import convert_dicom, import_dicom
from napari_myelin.io.volume import load_volume

from ._dicom_series import write_series, world_lps

SHAPE = (16, 12, 4)
BASE = np.arange(np.prod(SHAPE)).reshape(SHAPE) + 100.0  # every voxel its own value: the geometry is testable
PHASE = 2.0 * np.round(np.linspace(-2048, 2047, BASE.size)).reshape(SHAPE)  # -4096..4094, stored (p + 4096) / 2
B1_FA_MAP = np.round(800 * np.linspace(0.8, 1.2, BASE.size)).reshape(SHAPE)  # tenths of a degree of 80 deg
BVALS = [0.0, 1000.0, 1000.0, 2000.0]
BVECS_LPS = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]

#: Series number -> (what it is, the array written).
DATA = {
    2: np.stack([BASE + 1000 * e for e in range(6)], -1),
    3: np.stack([BASE + 3000 * e for e in range(3)], -1),
    4: np.stack([PHASE, PHASE[::-1], PHASE], -1),
    5: BASE, 6: BASE + 5, 7: BASE + 7, 8: BASE + 8, 9: BASE + 9,
    10: np.stack([BASE * (4 - i) for i in range(4)], -1),
    11: B1_FA_MAP, 12: BASE + 12, 13: BASE + 13,
}


def write_subject(folder):
    """One series of every kind, a localizer and an MPRAGE."""
    write_series(folder, 2, "mese_32echo", DATA[2], echo_times_ms=[10, 20, 30, 40, 50, 60], sequence="SE",
                 variant="SK\\SP", flip=180, tr_ms=1000)
    write_series(folder, 3, "gre_qsm", DATA[3], echo_times_ms=[5, 10, 15], tr_ms=30)
    write_series(folder, 4, "gre_qsm", DATA[4], echo_times_ms=[5, 10, 15], tr_ms=30,
                 image_type=("ORIGINAL", "PRIMARY", "P", "ND"), slope=2.0, intercept=-4096.0)
    write_series(folder, 5, "vfa_fa3", DATA[5], echo_times_ms=[2.5], flip=3.0, tr_ms=15)
    write_series(folder, 6, "vfa_fa20", DATA[6], echo_times_ms=[2.5], flip=20.0, tr_ms=15)
    write_series(folder, 7, "mt_on", DATA[7], echo_times_ms=[2.5], flip=6.0, tr_ms=30,
                 extra={"MagnetizationTransfer": "OFF_RESONANCE"})
    write_series(folder, 8, "pdw", DATA[8], echo_times_ms=[2.5], flip=6.0, tr_ms=30,
                 extra={"MagnetizationTransfer": "NONE"})
    write_series(folder, 9, "t1w", DATA[9], echo_times_ms=[2.5], flip=20.0, tr_ms=18,
                 extra={"MagnetizationTransfer": "NONE"})
    write_series(folder, 10, "dwi_2shell", DATA[10], echo_times_ms=[80], sequence="EP", variant="SK\\SP", flip=90,
                 tr_ms=5000, per_volume={i: {"DiffusionBValue": b, "DiffusionGradientOrientation": v}
                                         for i, (b, v) in enumerate(zip(BVALS, BVECS_LPS))})
    write_series(folder, 11, "tfl_b1map", DATA[11], echo_times_ms=[2], flip=8.0, tr_ms=5000,
                 image_type=("ORIGINAL", "PRIMARY", "FLIP ANGLE MAP", "ND"))
    write_series(folder, 12, "localizer", DATA[12], echo_times_ms=[4], flip=20.0, tr_ms=8.6)
    write_series(folder, 13, "t1_mprage", DATA[13], echo_times_ms=[2.3], flip=9.0, tr_ms=2300, sequence="GR\\IR")
    return folder


#: The files of sub-01 (without .nii.gz/.json) and the series each holds (number, volume index).
EXPECTED = {
    **{f"anat/sub-01_echo-{e}_MESE": (2, e - 1) for e in range(1, 7)},
    **{f"anat/sub-01_echo-{e}_part-mag_MEGRE": (3, e - 1) for e in range(1, 4)},
    **{f"anat/sub-01_echo-{e}_part-phase_MEGRE": (4, e - 1) for e in range(1, 4)},
    "anat/sub-01_flip-1_VFA": (5, None), "anat/sub-01_flip-2_VFA": (6, None),
    "anat/sub-01_flip-1_mt-on_MTS": (7, None), "anat/sub-01_flip-1_mt-off_MTS": (8, None),
    "anat/sub-01_flip-2_mt-off_MTS": (9, None),
    "dwi/sub-01_dwi": (10, None), "fmap/sub-01_TB1map": (11, None),
}


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory):
    return write_subject(tmp_path_factory.mktemp("scanner") / "DICOM")


@pytest.fixture(scope="module")
def imported(dicom_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    return import_dicom(dicom_dir, root, subject="01"), root / "sub-01"


def _in_dicom_layout(vol) -> np.ndarray:
    """The NIfTI's voxels put back at the DICOM (column, row, slice) position their world point has."""
    ijk = np.indices(vol.shape[:3]).reshape(3, -1)
    ras = vol.affine[:3, :3] @ ijk + vol.affine[:3, 3:4]
    lps = ras * np.array([[-1.0], [-1.0], [1.0]])
    src = np.rint((lps - world_lps((0, 0, 0))[:, None]) / np.array([[2.0], [2.5], [3.0]])).astype(int)
    out = np.empty(vol.data.shape, float)
    out[tuple(src)] = vol.data.reshape(int(np.prod(vol.shape[:3])), -1).squeeze()
    return out


def test_every_kind_gets_its_bids_name(imported):
    result, sub = imported
    written = {str(p.relative_to(sub)) for p in result.written}
    assert written == ({f"{n}.nii.gz" for n in EXPECTED} | {f"{n}.json" for n in EXPECTED}
                       | {"dwi/sub-01_dwi.bval", "dwi/sub-01_dwi.bvec"})
    assert result.left_out_lines() == [
        "series 12 'localizer': single-echo gradient echo (FA 20 deg, TR 0.0086 s) without a VFA partner at "
        "another flip angle on its grid and TR (a VFA series was imported)",
        "series 13 't1_mprage': inversion recovery (e.g. MPRAGE, FLAIR); no estimator reads it",
    ]
    desc = json.loads((sub.parent / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and desc["GeneratedBy"][0]["Name"] == "dcm2niix"
    assert not [p for p in sub.parent.iterdir() if p.name.startswith(".")]  # the work folder is gone


def test_sidecars_carry_the_protocol(imported):
    _, sub = imported

    def side(name):
        return json.loads((sub / f"{name}.json").read_text())

    for e in range(1, 7):
        assert side(f"anat/sub-01_echo-{e}_MESE")["EchoTime"] == pytest.approx(0.01 * e)
    assert side("anat/sub-01_echo-1_MESE")["RepetitionTime"] == 1.0
    assert side("anat/sub-01_echo-1_MESE")["FlipAngle"] == 180
    for e in range(1, 4):
        for part in ("mag", "phase"):
            s = side(f"anat/sub-01_echo-{e}_part-{part}_MEGRE")
            assert s["EchoTime"] == pytest.approx(0.005 * e) and s["RepetitionTime"] == 0.03
            assert s["MagneticFieldStrength"] == 3
    assert [side(f"anat/sub-01_flip-{i}_VFA")["FlipAngle"] for i in (1, 2)] == [3, 20]
    assert {side(f"anat/sub-01_flip-{i}_VFA")["RepetitionTime"] for i in (1, 2)} == {0.015}
    mts = {n: side(f"anat/sub-01_{n}_MTS") for n in ("flip-1_mt-on", "flip-1_mt-off", "flip-2_mt-off")}
    assert [(m["FlipAngle"], m["RepetitionTimeExcitation"], m["MTState"]) for m in mts.values()] == [
        (6, 0.03, True), (6, 0.03, False), (20, 0.018, False)]
    dwi = side("dwi/sub-01_dwi")
    assert dwi["EchoTime"] == 0.08 and dwi["RepetitionTime"] == 5 and dwi["FlipAngle"] == 90
    assert side("fmap/sub-01_TB1map")["Units"] == "ratio"
    assert all("PatientName" not in side(n) for n in EXPECTED)  # dcm2niix anonymises


def test_data_and_geometry_are_the_dicoms(imported):
    """Every voxel lands at the world position its DICOM pixel has, with its value (phase as stored,
    -4096..4094; the Siemens flip-angle map as a ratio: / 800)."""
    _, sub = imported
    for name, (number, index) in EXPECTED.items():
        vol = load_volume(sub / f"{name}.nii.gz")
        expected = DATA[number] if index is None else DATA[number][..., index]
        if number == 11:
            expected = expected / 800.0
        np.testing.assert_allclose(_in_dicom_layout(vol), expected, rtol=1e-6, err_msg=name)
    b1 = load_volume(sub / "fmap/sub-01_TB1map.nii.gz").data
    assert b1.min() == pytest.approx(0.8) and b1.max() == pytest.approx(1.2)
    dwi = load_volume(sub / "dwi/sub-01_dwi.nii.gz")
    np.testing.assert_array_equal(dwi.bvals, BVALS)
    # FSL bvecs (voxel axes, x flipped for this positive-determinant affine): LPS x, y, z -> 1, -1, 1
    np.testing.assert_array_equal(dwi.bvecs, [[0, 0, 0], [1, 0, 0], [0, -1, 0], [0, 0, 1]])


def test_the_pipeline_finds_and_reads_the_imported_subject(imported):
    from napari_myelin.reconst.mtsat import load_mts
    from napari_myelin.reconst.qpm import load_spgr
    from napari_myelin.reconst.qsm import phase_to_radians

    _, sub = imported
    files = find_subject(sub)
    assert files.present() == {"mese": True, "gre": True, "spgr": True, "mts": True, "b1": True, "dwi": True}
    mese = load_multi(files.mese)
    assert mese.shape == SHAPE + (6,) and mese.echo_times.tolist() == pytest.approx([0.01 * e for e in range(1, 7)])
    phase = load_multi(files.gre_phase)
    assert phase.echo_times.tolist() == pytest.approx([0.005, 0.01, 0.015])
    np.testing.assert_allclose(phase_to_radians(phase.data), np.pi * phase.data / 4096, atol=1e-12)
    _, fa, tr = load_spgr(files.spgr)
    assert fa.tolist() == [3.0, 20.0] and tr == 0.015
    vols, fa, tr = load_mts(files.mts)
    assert [v.path.name for v in vols] == ["sub-01_flip-1_mt-on_MTS.nii.gz", "sub-01_flip-1_mt-off_MTS.nii.gz",
                                           "sub-01_flip-2_mt-off_MTS.nii.gz"]
    assert list(fa) == [6.0, 6.0, 20.0] and list(tr) == [0.03, 0.03, 0.018]


def test_cli_import_lists_what_it_left_out(dicom_dir, tmp_path, capsys):
    assert main(["import", str(dicom_dir), "--out", str(tmp_path / "bids"), "--subject", "p7"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "bids/sub-p7/anat/sub-p7_echo-1_MESE.nii.gz") in out
    assert "not imported (2 series):\n  series 12 'localizer': single-echo gradient echo" in out
    assert f"next: napari-myelin run {tmp_path / 'bids/sub-p7'} --out RESULTS" in out
    with pytest.raises(SystemExit) as info:
        main(["import", "--help"])
    assert info.value.code == 0 and "DICOM_DIR" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "import" in capsys.readouterr().out


def test_cli_refusals_write_nothing(dicom_dir, tmp_path, capsys):
    empty = tmp_path / "not_dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("scanner notes")
    mprage_only = write_series(tmp_path / "mprage", 13, "t1_mprage", BASE, echo_times_ms=[2.3], flip=9.0,
                               tr_ms=2300, sequence="GR\\IR")
    taken = tmp_path / "taken"
    (taken / "sub-01" / "anat").mkdir(parents=True)
    cases = [
        ([str(empty), "--out", str(tmp_path / "o1")], f"{empty}: holds no DICOM files", tmp_path / "o1"),
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "o2")], "not a folder", tmp_path / "o2"),
        ([str(dicom_dir), "--out", str(tmp_path / "o3"), "--subject", "01_x"], "--subject '01_x': a BIDS label",
         tmp_path / "o3"),
        ([str(mprage_only), "--out", str(tmp_path / "o4")], "none of its 1 series is a MESE, DWI, MEGRE",
         tmp_path / "o4" / "sub-01"),
        ([str(dicom_dir), "--out", str(taken)], f"{taken / 'sub-01'}: already holds files", None),
    ]
    for argv, message, must_not_exist in cases:
        assert main(["import", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("napari-myelin import: error: ") and message in err and err.count("\n") == 1, err
        if must_not_exist is not None:
            assert not must_not_exist.exists(), must_not_exist
    assert [p.name for p in (tmp_path / "o4").iterdir()] == []  # no half-written subject nor work folder
    assert [p.name for p in (taken / "sub-01").iterdir()] == ["anat"]


def test_incomplete_mt_trio_and_duplicates_are_left_out(tmp_path):
    """An MT-on series with one MT-off partner is no trio: the MT-off one is an ordinary single-echo GRE;
    a second MEGRE magnitude series is not imported over the first."""
    folder = tmp_path / "DICOM"
    write_series(folder, 7, "mt_on", BASE, echo_times_ms=[2.5], flip=6.0, tr_ms=30,
                 extra={"MagnetizationTransfer": "OFF_RESONANCE"})
    write_series(folder, 8, "mt_off", BASE, echo_times_ms=[2.5], flip=6.0, tr_ms=30)
    write_series(folder, 3, "gre_qsm", DATA[3], echo_times_ms=[5, 10, 15], tr_ms=30)
    write_series(folder, 14, "gre_qsm_repeat", DATA[3], echo_times_ms=[5, 10, 15], tr_ms=30)
    for number, flip in ((20, 3.0), (21, 3.0), (22, 20.0)):  # a VFA pair with its low angle repeated
        write_series(folder, number, f"vfa_fa{flip:g}", BASE, echo_times_ms=[2.5], flip=flip, tr_ms=15)
    series = {s.number: s for s in convert_dicom(folder, tmp_path / "work")}
    for number in (20, 21, 22):
        assert series[number].kind == "" and "where a flip angle is repeated" in series[number].reason
    assert series[3].kind == "megre-mag"
    assert series[3].names == [f"anat/sub-01_echo-{e}_part-mag_MEGRE" for e in (1, 2, 3)]
    assert (series[14].kind, series[14].reason) == ("", "another MEGRE-MAG series; series 3 'gre_qsm' was imported")
    assert series[7].reason == ("MT-weighted, but the MTS trio needs one MT-on and two MT-off series at two flip "
                                "angles (1 MT-on, 1 MT-off found)")
    assert series[8].reason.startswith("single-echo gradient echo (FA 6 deg, TR 0.03 s) without a VFA partner")


def test_napari_reads_a_dicom_folder(dicom_dir, tmp_path):
    from napari_myelin._reader import napari_get_dicom_reader, napari_get_reader

    reader = napari_get_dicom_reader(str(dicom_dir))
    assert reader is not None and napari_get_reader(str(dicom_dir)) is None
    assert napari_get_dicom_reader(str(tmp_path)) is None
    layers = {attrs["name"]: (data, attrs, kind) for data, attrs, kind in reader(str(dicom_dir))}
    assert set(layers) == {"sub-01_MESE", "sub-01_part-mag_MEGRE", "sub-01_part-phase_MEGRE", "sub-01_flip-1_VFA",
                           "sub-01_flip-2_VFA", "sub-01_flip-1_mt-on_MTS", "sub-01_flip-1_mt-off_MTS",
                           "sub-01_flip-2_mt-off_MTS", "sub-01_dwi", "sub-01_TB1map", "12 localizer",
                           "13 t1_mprage"}
    data, attrs, kind = layers["sub-01_part-mag_MEGRE"]
    assert kind == "image" and data.shape == (3, SHAPE[2], SHAPE[1], SHAPE[0])  # echoes first, then z, y, x
    sidecar = attrs["metadata"]["napari_myelin"]["sidecar"]
    assert sidecar["EchoTime"] == pytest.approx([0.005, 0.01, 0.015])
    np.testing.assert_allclose(np.sort(data[1].ravel()), np.sort((BASE + 3000).ravel()))
    assert layers["sub-01_dwi"][1]["metadata"]["napari_myelin"]["bvals"] == BVALS


def test_viewer_opens_a_dicom_folder_through_the_plugin(make_napari_viewer, dicom_dir):
    viewer = make_napari_viewer()
    layers = viewer.open(str(dicom_dir), plugin="napari-myelin")
    assert [layer.name for layer in layers][:3] == ["sub-01_MESE", "sub-01_part-mag_MEGRE", "sub-01_part-phase_MEGRE"]
    assert len(viewer.layers) == 12 and viewer.layers["sub-01_MESE"].data.shape == (6, 4, 12, 16)

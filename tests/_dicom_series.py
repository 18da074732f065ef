"""Small synthetic MR DICOM series written with pydicom (classic MR Image Storage, one file per slice).

Geometry: axial slices (``ImageOrientationPatient`` 1 0 0 / 0 1 0), ``PixelSpacing`` and
``ImagePositionPatient`` from ``spacing`` and ``origin`` (mm, DICOM LPS), slices along +z. Pixel
(row r, column c) of slice k of volume v is ``data[c, r, k, v]``; the stored integers are
``(value - intercept) / slope``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: A study shared by every series of one test subject.
STUDY_UID = "1.2.826.0.1.3680043.8.498.10"


def write_series(folder, number: int, description: str, data, *, echo_times_ms=None, tr_ms: float = 20.0,
                 flip: float = 15.0, image_type=("ORIGINAL", "PRIMARY", "M", "ND"), sequence: str = "GR",
                 variant: str = "SP", spacing=(2.0, 2.5, 3.0), origin=(-16.0, -15.0, -6.0), slope: float = 1.0,
                 intercept: float = 0.0, extra: dict | None = None, per_volume: dict | None = None) -> Path:
    """Write one series (data (X, Y, Z) or (X, Y, Z, V); V echoes when ``echo_times_ms`` has V entries)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vols = np.asarray(data, dtype=float)
    vols = vols[..., None] if vols.ndim == 3 else vols
    nx, ny, nz, nv = vols.shape
    stored = np.round((vols - intercept) / slope).astype(np.int16)
    series_uid = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    tes = list(echo_times_ms) if echo_times_ms is not None else None
    for v in range(nv):
        for k in range(nz):
            instance = v * nz + k + 1
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(str(folder / f"s{number:03d}_{instance:04d}.dcm"), {}, file_meta=meta,
                             preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", "SIEMENS", 3.0
            ds.PatientName, ds.PatientID, ds.PatientPosition = "Test^Subject", "TEST01", "HFS"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, series_uid
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240101"
            ds.StudyTime = "120000"
            ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"12{number:02d}00"
            ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = number, instance, 1
            ds.SeriesDescription = ds.ProtocolName = description
            ds.ImageType = list(image_type)
            ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = sequence, variant, "3D"
            ds.RepetitionTime, ds.FlipAngle = tr_ms, flip
            if tes is not None:
                multi = len(tes) == nv and nv > 1
                ds.EchoTime = tes[v] if multi else tes[0]
                ds.EchoNumbers = v + 1 if multi else 1
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
            ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
            ds.SliceThickness = ds.SpacingBetweenSlices = spacing[2]
            ds.Rows, ds.Columns = ny, nx
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
            for key, value in {**(extra or {}), **((per_volume or {}).get(v) or {})}.items():
                setattr(ds, key, value)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k, v].T).tobytes()
            ds.save_as(ds.filename, enforce_file_format=True)
    return folder


def world_lps(ijk, spacing=(2.0, 2.5, 3.0), origin=(-16.0, -15.0, -6.0)) -> np.ndarray:
    """DICOM patient coordinates (LPS, mm) of ``data[i, j, k]`` as :func:`write_series` lays it out."""
    return np.asarray(origin) + np.asarray(ijk, dtype=float) * np.asarray(spacing)

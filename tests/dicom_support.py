"""Test support for DICOM tests: files made from pydicom's bundled samples (import this
module after ``pytest.importorskip("pydicom")``)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np


def write_enhanced_mr(
    path: Path,
    mr_small: str,
    n: int = 6,
    *,
    frame_step: int = 100,
    rescale: tuple[float, float] | None = (2, -10),
) -> dict:
    """Write an Enhanced MR multi-frame file built from ``mr_small`` (the path of pydicom's
    MR_small.dcm) to ``path``: ``n`` frames stored from top to bottom, frame ``f`` holding
    the sample's pixels + ``frame_step * f``; ``rescale`` (slope, intercept) goes into a
    shared Pixel Value Transformation (None: no such sequence). Returns ``{"frames": [...]}``."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    base = pydicom.dcmread(mr_small)
    ds = copy.deepcopy(base)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, kw)
    ds.NumberOfFrames = n
    shared, orient, measures = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.4], 1.5
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    if rescale is not None:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = *rescale, "US"
        shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame, frames = [], []
    for f in range(n):
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [10.0, 20.0, 30.0 - 1.5 * f]  # stored top to bottom
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
        frames.append((base.pixel_array + frame_step * f).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return {"frames": frames}

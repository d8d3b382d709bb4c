"""DICOM reading (series folders, single and multi-frame files) and writing (a new series).

Reading -- :func:`load_dicom`
=============================
* **What is read.** A single file (single or multi-frame: enhanced MR/CT with
  functional groups, legacy multi-frame, RT dose, ultrasound cine), or a folder
  (searched recursively, symlinked folders not followed; only Part-10 files with
  the ``DICM`` preamble; DICOMDIRs and instances without pixels are skipped).
  Instances are grouped by Series Instance UID. With several series in the folder,
  pass ``series_uid=``; without it a ``ValueError`` lists the series (UID,
  modality, description, number of files) -- nothing is guessed.
* **Order.** Every frame of every instance is a slice. When every frame has an
  Image Position and one common Image Orientation (top level, or per-frame /
  shared functional groups, or RT dose Grid Frame Offset Vector, or legacy
  multi-frame with Spacing Between Slices), slices are sorted by the position
  projected on the slice normal (row x column cosines); ties, missing geometry or
  mixed orientations fall back to (Instance Number, frame number) -- never the
  file name. ``header["dicom"]["geometry"]`` says which rule was used:
  ``"regular"``, ``"irregular spacing"``, ``"duplicate positions"``,
  ``"mixed orientations"``, ``"single slice"`` or ``"none"``.
* **Array.** ``Volume.array`` has shape ``(Columns, Rows, slices)`` (x along the
  row direction, y along the column direction, z along the sorted slices) and the
  *stored* dtype (uint8/int8/uint16/int16/uint32/int32 from Bits Allocated and Pixel
  Representation; BitsAllocated 1 gives uint8 0/1), native byte order. Rescale
  Slope/Intercept (or RT Dose Grid Scaling) are *not* applied: when they are the
  same for every slice they are in ``header["scl_slope"]``/``header["scl_inter"]``
  (so ``Volume.value_scaling`` works as for NIfTI); when they vary per slice,
  ``header["dicom"]["rescale"]`` lists ``[slope, intercept]`` per slice and the
  ``scl_*`` keys are absent.
* **Colour.** RGB, YBR_* (converted to RGB by pydicom first) and PALETTE COLOR
  (after the palette lookup) become grey: ITU-R BT.601 luma
  ``0.299 R + 0.587 G + 0.114 B``, rounded; uint8 for 8-bit data and for palettes
  (16-bit palette entries are divided by 256), uint16 for 16/32-bit RGB.
  ``header["converted_to_grey"] = "BT.601 luma of <photometric>"``.
* **Affine.** The NIfTI-style RAS affine: LPS columns ``row_cosine * PixelSpacing[1]``,
  ``col_cosine * PixelSpacing[0]``, the slice step ``(P_last - P_first) / (n - 1)``
  (or ``normal * (SpacingBetweenSlices | SliceThickness | 1)`` for one slice), the
  translation ``P_first``; then x and y negated (LPS -> RAS). Without orientation
  the axial identity is assumed, without position the origin is 0, without Pixel
  Spacing: Imager Pixel Spacing, then the Sequence of Ultrasound Regions (cm ->
  mm), then 1.0; ultrasound cine frames step 1.0 along z (time frames are slices).
* **Compressed transfer syntaxes** go through pydicom's pixel decoders (RLE is
  built in, JPEG baseline/J2K through Pillow; JPEG lossless, 12-bit and JPEG-LS need
  ``pylibjpeg`` + ``pylibjpeg-libjpeg``; ``pylibjpeg-openjpeg`` for J2K/HTJ2K).

Sidecar metadata -- ``Volume.header["dicom"]``
===============================================
Every instance's attributes in the DICOM JSON model (PS3.18 F.2), private tags
included, ``"format": "dicom-json"``. To keep the stream small the attributes
identical in *all* instances of a multi-instance series are stored once in
``"shared"`` and ``"instances"[i]`` holds the rest; :func:`instance_json` merges
them back into instance ``i``'s complete JSON dataset. Dropped at reading: Pixel
Data / Float / Double Float Pixel Data, Extended Offset Tables, the Icon Image
Sequence, trailing padding, and any binary value (OB/OD/OF/OL/OV/OW/UN) longer
than ``bulk_limit`` bytes (default 16 KiB; smaller ones are kept as base64
``InlineBinary``), and values pydicom cannot express in JSON (non-finite floats,
invalid numbers); each is listed in ``"dropped"``. Nothing from the data is
executed or used as a path: BulkDataURIs are never written and are refused when a
header is read back. Also stored: ``"series_uid"``, ``"order"`` (``[instance,
frame]`` of each slice), ``"frames"`` (frames per instance), ``"photometric"``
and ``"transfer_syntaxes"`` (of the source), ``"geometry"``, ``"slice_spacing"``.

Writing -- :func:`save_dicom`
=============================
One file per source instance (multi-frame input stays one multi-frame file), frames
in their original order, Explicit VR Little Endian, uncompressed. Attributes are
those of the source (patient, study, frame of reference, geometry, functional
groups, private tags, Rescale, Bits Allocated/Stored, High Bit, Pixel
Representation) with a NEW Series Instance UID and NEW SOP Instance UIDs. Group
lengths and overlays whose data was dropped are removed. Colour input that was
converted to grey is written as MONOCHROME2 with the grey pixels (palette,
planar configuration removed; Bits 8/8/7 or 16/16/15, unsigned). Values outside the
Bits Stored range are clipped. A source decoded from a lossy transfer syntax keeps
``Lossy Image Compression = "01"``; ``lossy_ratio=`` sets "01" and appends the
ratio and method to Lossy Image Compression Ratio / Method. Geometry comes from
the stored instances, not from ``Volume.affine``. A volume without a DICOM header
(e.g. from NIfTI) becomes a Secondary Capture series (one file per slice) with
Image Plane attributes from the affine and the NIfTI scaling as Rescale. The
series is written into a hidden temp folder beside ``out_dir`` and renamed at the
end (``out_dir`` must not exist, or be empty).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medgpu.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

__all__ = [
    "BULK_LIMIT",
    "is_dicom_file",
    "load_dicom",
    "save_dicom",
    "dataset_to_json",
    "dataset_from_json",
    "instance_json",
    "list_series",
    "nifti_ready",
]

BULK_LIMIT = 16 * 1024
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010, 0x7FE00001, 0x7FE00002, 0xFFFCFFFC})
_ICON_SEQUENCE = 0x00880200
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_LOSSY_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
_PALETTE_TAGS = (
    0x00281101, 0x00281102, 0x00281103, 0x00281104, 0x00281111, 0x00281112, 0x00281113,
    0x00281199, 0x00281201, 0x00281202, 0x00281203, 0x00281204, 0x00281221, 0x00281222, 0x00281223,
)  # fmt: skip
_CS_METHOD = re.compile(r"[A-Z0-9_ ]{1,16}")


# ============================================================================ reading


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a file with the Part-10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def list_series(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The series in ``folder``: ``uid``, ``modality``, ``description``, ``files`` (count)."""
    groups = _scan_folder(Path(folder))
    return [_series_summary(uid, items) for uid, items in groups.items()]


def load_dicom(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    bulk_limit: int = BULK_LIMIT,
) -> Volume:
    """Read a DICOM file or series folder into a :class:`Volume` (see the module doc).

    Args:
        path: a DICOM file (single or multi-frame) or a folder holding one or more series.
        series_uid: which series of a folder to read; required when it holds several.
        bulk_limit: binary attribute values longer than this many bytes are dropped from
            the JSON header (pixel data is always dropped).
    """
    path = Path(path)
    if path.is_dir():
        groups = _scan_folder(path)
        if not groups:
            hint = ""
            if any(f.name.lower().endswith((".nii", ".nii.gz")) for f in path.iterdir()):
                hint = " (it holds NIfTI files: compress them one by one, or the whole folder with `medgpu archive`)"
            raise ValueError(f"{path}: no DICOM image files (with the DICM preamble) found{hint}")
        if series_uid is None:
            if len(groups) > 1:
                listing = "; ".join(
                    f"{s['uid']} ({s['modality'] or '?'}, {s['description'] or 'no description'!r}, {s['files']} files)"
                    for s in (_series_summary(u, items) for u, items in groups.items())
                )
                raise ValueError(f"{path} holds {len(groups)} series; choose one with series_uid=: {listing}")
            series_uid = next(iter(groups))
        elif series_uid not in groups:
            raise ValueError(f"{path}: no series {series_uid}; found {', '.join(groups)}")
        datasets = [ds for _, ds in groups[series_uid]]
    elif path.is_file():
        ds = _read_file(path)
        if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
            raise ValueError(f"{path}: DICOM file without an image (SOP class {ds.get('SOPClassUID', '?')})")
        datasets = [ds]
        uid = ds.get("SeriesInstanceUID")
        if series_uid is not None and uid != series_uid:
            raise ValueError(f"{path}: belongs to series {uid}, not {series_uid}")
        series_uid = str(uid) if uid else None
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")
    return _build_volume(datasets, series_uid, str(path), bulk_limit)


@dataclass
class _Frame:
    instance: int
    frame: int
    instance_number: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    slope: float
    intercept: float


def _build_volume(datasets: list[Dataset], series_uid: str | None, path: str, bulk_limit: int) -> Volume:
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shapes) > 1:
        raise ValueError(f"{path}: instances of one series have different sizes {sorted(shapes)}")
    rows, cols = shapes.pop()
    frames: list[_Frame] = []
    for i, ds in enumerate(datasets):
        frames.extend(_frames_of(ds, i))
    order, geometry = _sort_frames(frames)
    ordered = [frames[k] for k in order]

    header: dict[str, Any] = {}
    pixels: list[np.ndarray] = []
    photometric = []
    for ds in datasets:
        pix, conversion = _grey_pixels(ds)
        pixels.append(pix)
        del ds[0x7FE00010]  # the encoded bytes are not needed any more
        photometric.append(str(ds.get("PhotometricInterpretation", "")))
        if conversion:
            header["converted_to_grey"] = conversion
    dtype = np.result_type(*[p.dtype for p in pixels])
    array = np.empty((cols, rows, len(ordered)), dtype=dtype, order="F")
    for k, fr in enumerate(ordered):
        array[:, :, k] = pixels[fr.instance][fr.frame].T
    del pixels

    affine, slice_spacing = _affine(ordered, geometry, datasets[0])
    scaling = {(f.slope, f.intercept) for f in ordered}
    dropped: list[str] = []
    instances = [
        dataset_to_json(ds, bulk_limit=bulk_limit, dropped=dropped, prefix=f"[{i}]") for i, ds in enumerate(datasets)
    ]
    shared: dict[str, Any] = {}
    if len(instances) > 1:
        shared, instances = _factor_shared(instances)
    dicom: dict[str, Any] = {
        "format": "dicom-json",
        "series_uid": series_uid,
        "shared": shared,
        "instances": instances,
        "order": [[f.instance, f.frame] for f in ordered],
        "frames": [_n_frames(ds) for ds in datasets],
        "photometric": photometric,
        "transfer_syntaxes": [_transfer_syntax(ds) for ds in datasets],
        "geometry": geometry,
        "slice_spacing": slice_spacing,
        "dropped": dropped,
    }
    if len(scaling) == 1:
        slope, inter = scaling.pop()
        header["scl_slope"], header["scl_inter"] = slope, inter
    else:
        dicom["rescale"] = [[f.slope, f.intercept] for f in ordered]
    frame_time = _float(datasets[0].get("FrameTime"))
    if frame_time is not None:
        dicom["frame_time_ms"] = frame_time
    header["dicom"] = dicom
    json.dumps(header, allow_nan=False)  # fail here, not in the container writer
    return Volume(array=array, affine=affine, source_format="dicom", header=header, path=path)


def _frames_of(ds: Dataset, index: int) -> list[_Frame]:
    n = _n_frames(ds)
    number = _int(ds.get("InstanceNumber")) or 0
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_fg = ds.get("SharedFunctionalGroupsSequence")
    shared_item = shared_fg[0] if shared_fg else None
    top_pos = _vector(ds.get("ImagePositionPatient"), 3)
    top_iop = _vector(ds.get("ImageOrientationPatient"), 6)
    top_ps = _pixel_spacing(ds)
    top_sbs = _float(ds.get("SpacingBetweenSlices"))
    top_thick = _float(ds.get("SliceThickness"))
    top_slope, top_inter = _rescale(ds)
    offsets = _vector(ds.get("GridFrameOffsetVector"), n) if n > 1 else None
    out = []
    for f in range(n):
        item = per_frame[f] if per_frame is not None and f < len(per_frame) else None

        def group(seq: str, attr: str, item: Any = item) -> Any:
            for holder in (item, shared_item):
                if holder is not None and seq in holder and len(holder[seq].value) and attr in holder[seq][0]:
                    return holder[seq][0].get(attr)
            return None

        pos = _vector(group("PlanePositionSequence", "ImagePositionPatient"), 3)
        iop = _vector(group("PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        ps = _pair(group("PixelMeasuresSequence", "PixelSpacing"))
        sbs = _float(group("PixelMeasuresSequence", "SpacingBetweenSlices"))
        thick = _float(group("PixelMeasuresSequence", "SliceThickness"))
        slope = _float(group("PixelValueTransformationSequence", "RescaleSlope"))
        inter = _float(group("PixelValueTransformationSequence", "RescaleIntercept"))
        iop = iop if iop is not None else top_iop
        if pos is None and top_pos is not None:
            if f == 0 or n == 1:
                pos = top_pos
            elif iop is not None and (offsets is not None or top_sbs):
                normal = np.cross(iop[:3], iop[3:])
                step = offsets[f] - offsets[0] if offsets is not None else f * float(top_sbs)  # type: ignore[arg-type]
                pos = top_pos + step * normal
        out.append(
            _Frame(
                instance=index,
                frame=f,
                instance_number=number,
                position=pos,
                orientation=iop,
                pixel_spacing=ps or top_ps,
                slice_spacing=sbs or thick or top_sbs or top_thick,
                slope=slope if slope else top_slope,
                intercept=inter if inter is not None and slope else top_inter,
            )
        )
    return out


def _sort_frames(frames: list[_Frame]) -> tuple[list[int], str]:
    def tie(k: int) -> tuple[int, int, int]:
        return frames[k].instance_number, frames[k].instance, frames[k].frame

    fallback = sorted(range(len(frames)), key=tie)
    if len(frames) == 1:
        return [0], "single slice"
    if any(f.position is None or f.orientation is None for f in frames):
        return fallback, "none"
    iop0 = frames[0].orientation
    if any(not np.allclose(f.orientation, iop0, atol=1e-4) for f in frames):  # type: ignore[arg-type]
        return fallback, "mixed orientations"
    normal = np.cross(iop0[:3], iop0[3:])  # type: ignore[index]
    dist = np.array([float(np.dot(f.position, normal)) for f in frames])  # type: ignore[arg-type]
    order = sorted(range(len(frames)), key=lambda k: (dist[k], *tie(k)))
    steps = np.diff(dist[order])
    if np.any(steps < 1e-4):
        return fallback, "duplicate positions"
    if steps.max() - steps.min() > 1e-2 * max(float(np.median(steps)), 1e-6):
        return order, "irregular spacing"
    return order, "regular"


def _affine(ordered: list[_Frame], geometry: str, ds: Dataset) -> tuple[np.ndarray, float]:
    first, last = ordered[0], ordered[-1]
    iop = first.orientation if first.orientation is not None else np.array([1.0, 0, 0, 0, 1.0, 0])
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    row_sp, col_sp = first.pixel_spacing or _ultrasound_spacing(ds) or (1.0, 1.0)
    normal = np.cross(row, col)
    spacing = first.slice_spacing or 1.0
    origin = first.position if first.position is not None else np.zeros(3)
    n = len(ordered)
    if geometry in ("regular", "irregular spacing") and n > 1:
        step = (np.asarray(last.position) - np.asarray(first.position)) / (n - 1)
        spacing = float(np.linalg.norm(step))
    else:
        step = normal * spacing
    lps = np.eye(4)
    lps[:3, 0] = row * col_sp
    lps[:3, 1] = col * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps, float(spacing)


def _grey_pixels(ds: Dataset) -> tuple[np.ndarray, str | None]:
    """Frames as (n, rows, cols) in the stored dtype (native order), colour turned grey."""
    from pydicom.pixels import pixel_array

    _ensure_transfer_syntax(ds)
    try:
        arr = pixel_array(ds)  # the function form does not cache the array on ``ds``
    except Exception as exc:  # pydicom raises many kinds; one clear line for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"cannot decode the pixel data ({_transfer_syntax(ds)}): {reason}"
            " -- for JPEG lossless/JPEG-LS/JPEG 2000 install pylibjpeg, pylibjpeg-libjpeg and pylibjpeg-openjpeg"
        ) from None
    arr = np.asarray(arr)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    n = _n_frames(ds)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    shape = (n, int(ds.Rows), int(ds.Columns)) + ((spp,) if spp > 1 else ())
    arr = arr.reshape(shape)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(arr, ds), dtype=np.float64)
        bits = _lut_bits(ds)
        if bits > 8 and rgb.max() > 255:
            rgb /= 256.0
        return _luma(rgb, np.uint8), f"BT.601 luma of {photometric}"
    if spp == 3:
        out = np.uint8 if arr.dtype.itemsize == 1 else np.uint16
        rgb = arr.astype(np.float64)
        if arr.dtype.itemsize > 2:
            rgb /= 2.0 ** (8 * arr.dtype.itemsize - 16)
        return _luma(rgb, out), f"BT.601 luma of {photometric}"
    if spp != 1:
        raise ValueError(f"unsupported Samples per Pixel {spp} ({photometric})")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return arr, None


def _luma(rgb: np.ndarray, dtype: Any) -> np.ndarray:
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    info = np.iinfo(dtype)
    return np.clip(np.rint(y), info.min, info.max).astype(dtype)


def _lut_bits(ds: Dataset) -> int:
    desc = ds.get("RedPaletteColorLookupTableDescriptor")
    try:
        return int(desc[2])
    except (TypeError, IndexError, ValueError):
        return 8


def _ultrasound_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm from the first region in cm, if any."""
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:
            dx, dy = _float(region.get("PhysicalDeltaX")), _float(region.get("PhysicalDeltaY"))
            if dx and dy and dx > 0 and dy > 0:
                return abs(dy) * 10.0, abs(dx) * 10.0
    return None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    return _pair(ds.get("PixelSpacing")) or _pair(ds.get("ImagerPixelSpacing"))


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = _float(ds.get("RescaleSlope"))
    inter = _float(ds.get("RescaleIntercept"))
    if slope:
        return slope, inter or 0.0
    dose = _float(ds.get("DoseGridScaling"))
    if dose:
        return dose, 0.0
    return 1.0, inter or 0.0


def _n_frames(ds: Dataset) -> int:
    n = _int(ds.get("NumberOfFrames"))
    return n if n and n > 0 else 1


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Files read with force=True may lack (0002,0010): infer it from the encoding read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )


def _read_file(path: Path) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable DICOM file: {exc}") from None
        if "Rows" not in ds or "PixelData" not in ds:
            raise ValueError(f"{path} is not a DICOM image file") from None
        return ds


def _scan_folder(folder: Path) -> dict[str, list[tuple[Path, Dataset]]]:
    import pydicom

    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            file = Path(root) / name
            if not file.is_file() or not is_dicom_file(file):
                continue
            try:
                ds = pydicom.dcmread(file, defer_size="64 KB")
            except Exception:  # unreadable or truncated file: not part of any series
                continue
            meta = getattr(ds, "file_meta", None)
            if meta is not None and meta.get("MediaStorageSOPClassUID") == _MEDIA_STORAGE_DIRECTORY:
                continue
            if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "(no series uid)")
            groups.setdefault(uid, []).append((file, ds))
    return groups


def _series_summary(uid: str, items: list[tuple[Path, Dataset]]) -> dict[str, Any]:
    ds = items[0][1]
    return {
        "uid": uid,
        "modality": str(ds.get("Modality", "")),
        "description": str(ds.get("SeriesDescription", "")),
        "files": len(items),
    }


# ============================================================================ JSON model


def dataset_to_json(
    ds: Dataset,
    *,
    bulk_limit: int = BULK_LIMIT,
    dropped: list[str] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """``ds`` in the DICOM JSON model (PS3.18 F.2), without pixel data and big binary values.

    Sequences are walked recursively; binary values up to ``bulk_limit`` bytes become
    ``InlineBinary``; what is left out is appended to ``dropped`` as ``"<prefix>GGGGEEEE"``
    paths (``"00540016[0].00181072"`` inside sequences) with the reason.
    """
    dropped = dropped if dropped is not None else []
    out: dict[str, Any] = {}
    for elem in ds:
        tag = int(elem.tag)
        key = f"{tag:08X}"
        where = f"{prefix}{key}"
        if tag in _PIXEL_TAGS or tag == _ICON_SEQUENCE:
            if not (tag == 0x7FE00010 and "." not in prefix):  # top-level Pixel Data goes without saying
                what = "icon image" if tag == _ICON_SEQUENCE else ("padding" if tag == 0xFFFCFFFC else "pixel data")
                dropped.append(f"{where} ({what})")
            continue
        vr = str(elem.VR)
        if vr == "SQ":
            items = [
                dataset_to_json(item, bulk_limit=bulk_limit, dropped=dropped, prefix=f"{where}[{j}].")
                for j, item in enumerate(elem.value or [])
            ]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        if vr in _BINARY_VRS and elem.value is not None:
            size = len(elem.value) if isinstance(elem.value, (bytes, bytearray)) else 0
            if size > bulk_limit:
                dropped.append(f"{where} ({size} bytes > bulk limit {bulk_limit})")
                continue
        try:
            value = elem.to_json_dict(None, bulk_limit + 1)
            json.dumps(value, allow_nan=False)
        except Exception as exc:  # invalid value in the source, or non-finite floats
            dropped.append(f"{where} (not expressible in JSON: {type(exc).__name__})")
            continue
        out[key] = value
    return out


def dataset_from_json(values: dict[str, Any]) -> Dataset:
    """Inverse of :func:`dataset_to_json`; BulkDataURIs are refused (nothing is fetched)."""
    from pydicom import Dataset

    def refuse(*args: Any) -> None:
        raise ValueError("BulkDataURI in a DICOM JSON header: refusing to fetch anything")

    return Dataset.from_json(copy.deepcopy(values), bulk_data_uri_handler=refuse)


def instance_json(header: dict[str, Any], index: int) -> dict[str, Any]:
    """The complete DICOM JSON dataset of instance ``index`` from ``Volume.header``."""
    dicom = header["dicom"]
    merged = dict(dicom.get("shared") or {})
    merged.update(dicom["instances"][index])
    return dict(sorted(merged.items()))


def _factor_shared(instances: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    def canon(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    first = instances[0]
    shared_keys = [
        k for k, v in first.items() if all(k in inst and canon(inst[k]) == canon(v) for inst in instances[1:])
    ]
    shared = {k: first[k] for k in shared_keys}
    rest = [{k: v for k, v in inst.items() if k not in shared} for inst in instances]
    return shared, rest


# ============================================================================ writing


def save_dicom(
    volume: Volume,
    out_dir: str | os.PathLike[str],
    *,
    lossy_ratio: float | None = None,
    lossy_method: str = "MEDGPU",
) -> list[Path]:
    """Write ``volume`` as a new DICOM series into the folder ``out_dir`` (see the module doc).

    Returns the written files in slice order of their first frame.
    """
    if lossy_ratio is not None:
        lossy_ratio = float(lossy_ratio)
        if not math.isfinite(lossy_ratio) or lossy_ratio <= 0:
            raise ValueError(f"lossy_ratio must be a positive number, got {lossy_ratio}")
    if not _CS_METHOD.fullmatch(lossy_method):
        raise ValueError(f"lossy_method must be 1-16 of A-Z, 0-9, '_' or space (a DICOM CS), got {lossy_method!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(volume.header.get("dicom"), dict):
        datasets = _datasets_from_header(volume)
    else:
        datasets = _secondary_capture(volume)
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    tmp = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(6)}.tmp"
    tmp.mkdir()
    names = []
    try:
        for i, ds in enumerate(datasets):
            _finish(ds, series_uid, generate_uid(), lossy_ratio, lossy_method)
            name = f"IM{i + 1:06d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in names]


def _datasets_from_header(volume: Volume) -> list[Dataset]:
    header = volume.header
    dicom = header["dicom"]
    order = [(int(i), int(f)) for i, f in dicom["order"]]
    frames = [int(n) for n in dicom["frames"]]
    array = np.asarray(volume.array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != len(order):
        raise ValueError(f"volume shape {array.shape} does not match its DICOM header ({len(order)} slices)")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"cannot write dtype {array.dtype} as DICOM pixels")
    slots: list[list[int | None]] = [[None] * n for n in frames]
    for k, (i, f) in enumerate(order):
        slots[i][f] = k
    if any(k is None for inst in slots for k in inst):
        raise ValueError("DICOM header order does not cover every frame of every instance")
    grey = "converted_to_grey" in header
    dropped = dicom.get("dropped") or []
    datasets = []
    for i, ks in enumerate(slots):
        try:
            ds = dataset_from_json(instance_json(header, i))
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"DICOM header of instance {i} is not a valid JSON dataset: {exc}") from None
        rows, cols = int(ds.Rows), int(ds.Columns)
        if array.shape[:2] != (cols, rows):
            raise ValueError(f"volume shape {array.shape} does not match Rows={rows}, Columns={cols}")
        source_syntax = (dicom.get("transfer_syntaxes") or [""] * len(slots))[i]
        _strip_for_output(ds, i, dropped)
        if grey:
            _make_grey(ds, array.dtype)
        stack = np.stack([array[:, :, k].T for k in ks])  # type: ignore[index]
        _set_pixels(ds, stack, multi_frame=frames[i] > 1 or "NumberOfFrames" in ds)
        if source_syntax in _LOSSY_SYNTAXES:  # decoded from a lossy stream: say so
            ds.LossyImageCompression = "01"
            if not ds.get("LossyImageCompressionMethod"):
                n_ratios = len(_as_list(ds.get("LossyImageCompressionRatio")))
                ds.LossyImageCompressionMethod = [_LOSSY_SYNTAXES[source_syntax]] * max(1, n_ratios)
        datasets.append(ds)
    first_slice = [min(ks) for ks in slots]  # type: ignore[type-var]
    return [datasets[i] for i in sorted(range(len(datasets)), key=first_slice.__getitem__)]


def _strip_for_output(ds: Dataset, index: int, dropped: Iterable[str]) -> None:
    for tag in [t for t in ds.keys() if t.element == 0 or int(t) in _PIXEL_TAGS]:
        del ds[tag]
    overlay_groups = set()
    for entry in dropped:
        m = re.match(r"\[(\d+)\](60[0-9A-F]{2})3000 ", entry)
        if m and int(m.group(1)) == index:
            overlay_groups.add(int(m.group(2), 16))
    for tag in [t for t in ds.keys() if t.group in overlay_groups]:
        del ds[tag]


def _make_grey(ds: Dataset, dtype: np.dtype) -> None:
    bits = 8 if np.dtype(dtype).itemsize == 1 else 16
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for tag in (*_PALETTE_TAGS, 0x00280006):  # palette LUTs, Planar Configuration
        if tag in ds:
            del ds[tag]


def _set_pixels(ds: Dataset, frames: np.ndarray, *, multi_frame: bool) -> None:
    """Store ``frames`` (n, rows, cols) with the dataset's Bits Allocated/Stored and sign."""
    from pydicom.pixels import pack_bits

    allocated = int(ds.get("BitsAllocated", 16))
    stored = int(ds.get("BitsStored", allocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if allocated == 1:
        data = pack_bits(np.clip(np.rint(frames), 0, 1).astype(np.uint8))
        vr = "OB"
    else:
        if allocated not in (8, 16, 32):
            raise ValueError(f"cannot write Bits Allocated = {allocated}")
        lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
        values = frames
        if values.dtype.kind == "f":
            values = np.rint(values)
        values = np.clip(values, lo, hi)
        out = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
        data = values.astype(out).tobytes()
        vr = "OB" if allocated == 8 else "OW"
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, vr, data)
    if multi_frame:
        ds.NumberOfFrames = int(frames.shape[0])


def _finish(ds: Dataset, series_uid: str, sop_uid: str, lossy_ratio: float | None, lossy_method: str) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    if lossy_ratio is not None:
        ratios: list[str] = []
        methods: list[str] = []
        if ds.get("LossyImageCompression") == "01":
            ratios = [str(v) for v in _as_list(ds.get("LossyImageCompressionRatio"))]
            methods = [str(v) for v in _as_list(ds.get("LossyImageCompressionMethod"))]
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = [*ratios, f"{lossy_ratio:.6g}"[:16]]
        ds.LossyImageCompressionMethod = [*methods, lossy_method]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDGPU"
    ds.file_meta = meta
    ds.preamble = b"\0" * 128


def _secondary_capture(volume: Volume) -> list[Dataset]:
    """One Secondary Capture instance per slice from the array, affine and NIfTI scaling."""
    from pydicom import Dataset
    from pydicom.uid import generate_uid

    array = np.asarray(volume.array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"only 2D/3D volumes can be written as DICOM without a DICOM header, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 4:
        raise ValueError(f"DICOM needs integer pixels of 8, 16 or 32 bits; this volume is {array.dtype}")
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(volume.affine, dtype=np.float64)[:3]
    col_sp, row_sp = float(np.linalg.norm(lps[:, 0])), float(np.linalg.norm(lps[:, 1]))
    if col_sp == 0 or row_sp == 0:
        raise ValueError("the affine has a zero in-plane axis; cannot derive DICOM geometry")
    row_cos, col_cos = lps[:, 0] / col_sp, lps[:, 1] / row_sp
    if abs(float(np.dot(row_cos, col_cos))) > 1e-3:
        raise ValueError("the affine's in-plane axes are not orthogonal; DICOM Image Orientation cannot express it")
    thickness = float(np.linalg.norm(lps[:, 2])) or 1.0
    slope, inter = volume.value_scaling
    study, frame_of_ref = generate_uid(), generate_uid()
    bits = 8 * array.dtype.itemsize
    descrip = str(volume.header.get("descrip", "") or "")
    descrip = "".join(c for c in descrip if 32 <= ord(c) < 127 and c != "\\")[:64]
    datasets = []
    for k in range(array.shape[2]):
        ds = Dataset()
        ds.SOPClassUID = _SECONDARY_CAPTURE
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = ""
        ds.PatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = study
        ds.StudyDate = ""
        ds.StudyTime = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = ""
        ds.AccessionNumber = ""
        ds.Modality = "OT"
        ds.SeriesNumber = 1
        ds.SeriesDescription = descrip
        ds.FrameOfReferenceUID = frame_of_ref
        ds.PositionReferenceIndicator = ""
        ds.ConversionType = "WSD"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.PatientOrientation = ""
        ds.ImagePositionPatient = [_ds_str(v) for v in lps @ np.array([0.0, 0.0, k, 1.0])]
        ds.ImageOrientationPatient = [_ds_str(v) for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [_ds_str(row_sp), _ds_str(col_sp)]
        ds.SliceThickness = _ds_str(thickness)
        ds.SpacingBetweenSlices = _ds_str(thickness)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[0])
        ds.BitsAllocated = bits
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 1 if array.dtype.kind == "i" else 0
        ds.RescaleSlope = _ds_str(slope)
        ds.RescaleIntercept = _ds_str(inter)
        ds.RescaleType = "US"
        _set_pixels(ds, array[:, :, k].T[None], multi_frame=False)
        datasets.append(ds)
    return datasets


# ============================================================================ NIfTI export


def nifti_ready(volume: Volume) -> Volume:
    """A view of a DICOM-sourced volume that ``save_nifti`` writes with the right scaling.

    A uniform Rescale becomes ``scl_slope``/``scl_inter`` next to the stored integers; a
    per-slice Rescale cannot be expressed in NIfTI, so real-world float32 values are
    written instead. Other volumes are returned unchanged.
    """
    if volume.source_format == "nifti" or "srow_x" in volume.header:
        return volume
    if volume.slice_rescale:
        return Volume(volume.real_world_array(), volume.affine, volume.spacing, "array", {}, volume.path)
    slope, inter = volume.value_scaling
    if (slope, inter) == (1.0, 0.0):
        return Volume(volume.array, volume.affine, volume.spacing, "array", {}, volume.path)
    import nibabel as nib

    from medgpu.io.nifti import header_to_dict

    img = nib.Nifti1Image(np.asarray(volume.array), volume.affine, dtype=volume.array.dtype)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    values = header_to_dict(hdr)
    return Volume(volume.array, volume.affine, volume.spacing, "nifti", values, volume.path)


# ============================================================================ helpers


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    f = _float(value)
    return int(f) if f is not None else None


def _vector(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        values = [float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        return None
    return np.array(values, dtype=np.float64)


def _pair(value: Any) -> tuple[float, float] | None:
    vec = _vector(value, 2)
    if vec is None or vec[0] <= 0 or vec[1] <= 0:
        return None
    return float(vec[0]), float(vec[1])


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _ds_str(value: float) -> str:
    """A Decimal String (<= 16 characters) for ``value``."""
    value = float(value)
    if value == 0:
        return "0"
    for digits in range(16, 0, -1):
        text = f"{value:.{digits}g}"
        if "e" in text:
            mant, exp = text.split("e")
            text = f"{mant}e{int(exp)}"
        if len(text) <= 16:
            return text
    return "0"

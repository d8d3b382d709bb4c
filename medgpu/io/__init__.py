"""Readers and writers that turn files into :class:`medgpu.volume.Volume` and back.

:func:`load_volume` and :func:`save_volume` pick the format; the format modules
(:mod:`medgpu.io.nifti`, :mod:`medgpu.io.dicom`) import their heavy libraries
(MONAI, nibabel, pydicom) only when called.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medgpu.io.dicom import (
    dataset_from_json,
    dataset_to_json,
    instance_json,
    is_dicom_file,
    list_series,
    load_dicom,
    save_dicom,
)
from medgpu.io.nifti import (
    NIFTI_SUFFIXES,
    header_from_dict,
    header_to_dict,
    is_nifti_path,
    load_nifti,
    save_nifti,
)
from medgpu.volume import Volume

__all__ = [
    "NIFTI_SUFFIXES",
    "dataset_from_json",
    "dataset_to_json",
    "header_from_dict",
    "header_to_dict",
    "instance_json",
    "is_dicom_file",
    "is_nifti_path",
    "list_series",
    "load_dicom",
    "load_nifti",
    "load_volume",
    "save_dicom",
    "save_nifti",
    "save_volume",
]

_FORMATS = ("nifti", "dicom")


def load_volume(path: str | os.PathLike[str], **kwargs: Any) -> Volume:
    """Read a NIfTI file, a DICOM file or a DICOM series folder.

    Dispatch: a folder -> :func:`load_dicom` (``series_uid=`` picks a series); a
    ``.nii``/``.nii.gz`` name -> :func:`load_nifti`; a ``.dcm`` name or a file with the
    ``DICM`` preamble -> :func:`load_dicom`; anything else raises ``ValueError``.
    ``kwargs`` go to the DICOM reader.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_dir():
        return load_dicom(p, **kwargs)
    if is_nifti_path(p):
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} do not apply to NIfTI files")
        return load_nifti(p)
    if p.suffix.lower() == ".dcm" or is_dicom_file(p):
        return load_dicom(p, **kwargs)
    raise ValueError(f"{p} is not a NIfTI or DICOM file")


def save_volume(
    volume: Volume,
    path_or_dir: str | os.PathLike[str],
    fmt: str | None = None,
    **kwargs: Any,
) -> Path | list[Path]:
    """Write ``volume`` as ``fmt`` ("nifti" or "dicom").

    Default: NIfTI for a .nii/.nii.gz name, else the kind the volume came from.

    NIfTI goes to the file ``path_or_dir`` (.nii/.nii.gz) and returns its path; a
    DICOM-sourced volume keeps its Rescale as ``scl_slope``/``scl_inter``.
    DICOM goes to the new folder ``path_or_dir`` and returns the files written;
    ``kwargs`` (``lossy_ratio``, ``lossy_method``) go to :func:`save_dicom`.
    """
    if fmt is None:
        fmt = "nifti" if is_nifti_path(path_or_dir) or volume.source_format != "dicom" else "dicom"
    fmt = fmt.lower()
    if fmt not in _FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(_FORMATS)}")
    if fmt == "dicom":
        return save_dicom(volume, path_or_dir, **kwargs)
    if kwargs:
        raise TypeError(f"options {sorted(kwargs)} do not apply to NIfTI output")
    from medgpu.io.dicom import nifti_ready

    return save_nifti(nifti_ready(volume), path_or_dir)

"""Readers and writers that turn files into :class:`medgpu.volume.Volume` and back."""
from __future__ import annotations

from medgpu.io.nifti import (
    NIFTI_SUFFIXES,
    header_from_dict,
    header_to_dict,
    is_nifti_path,
    load_nifti,
    save_nifti,
)

__all__ = [
    "NIFTI_SUFFIXES",
    "header_from_dict",
    "header_to_dict",
    "is_nifti_path",
    "load_nifti",
    "save_nifti",
]

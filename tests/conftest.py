"""Shared fixtures: synthetic arrays and NIfTI files written with nibabel into tmp_path."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

def synthetic_array(shape: Sequence[int], dtype: Any, seed: int = 0) -> np.ndarray:
    """Random values spanning a good part of ``dtype`` (integers: span <= 2**24)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 1000.0 - 250.0).astype(dt)
    info = np.iinfo(dt)
    if info.bits <= 16:
        low, high = int(info.min), int(info.max)
    else:  # large offset, span just under 2**24
        low = int(info.max) - 2**24 + 1 if dt.kind == "u" else -(2**23)
        high = low + 2**24 - 1
    values = rng.integers(low, high, size=shape, endpoint=True, dtype=np.int64)
    values.reshape(-1)[:2] = (low, high)  # make sure the extremes occur
    return values.astype(dt)


@pytest.fixture
def make_array() -> Callable[..., np.ndarray]:
    """Factory: :func:`synthetic_array`."""
    return synthetic_array


@pytest.fixture
def write_nifti(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write ``array`` as NIfTI-1 (or -2) with an optional header tweak; return the path."""
    import nibabel as nib

    def write(
        array: np.ndarray,
        name: str = "vol.nii.gz",
        affine: np.ndarray | None = None,
        version: int = 1,
        endianness: str = "<",
        tweak: Callable[[Any], None] | None = None,
    ) -> Path:
        if affine is None:
            affine = np.diag([0.8, 0.9, 2.5, 1.0])
        header_cls = nib.Nifti2Header if version == 2 else nib.Nifti1Header
        image_cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
        header = header_cls(endianness=endianness)
        header.set_data_dtype(np.dtype(array.dtype).newbyteorder(endianness))
        img = image_cls(array, affine, header=header)
        if tweak is not None:
            tweak(img)
        path = tmp_path / name
        nib.save(img, str(path))
        return path

    return write

"""The in-memory volume that every reader produces and every writer consumes."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Volume", "default_slice_axis", "normalize_slice_axis", "spacing_from_affine"]


@dataclass(eq=False)
class Volume:
    """A medical volume with its geometry and source metadata.

    Attributes:
        array: voxel values as *stored* in the source (original dtype, native byte
            order, no scl_slope/scl_inter applied), spatial axes first in file
            order: (x, y), (x, y, z) or (x, y, z, t, ...).
        affine: 4x4 float64 voxel-to-world matrix (the reader's best affine).
        spacing: one positive step per array axis; spatial entries are the norms of
            the affine's columns, later entries the stored pixdim (time step, ...).
        source_format: where the volume came from ("nifti", "dicom", "array").
        header: JSON-serialisable source metadata (for NIfTI: every raw header
            field plus ``nifti_version``, ``endianness`` and ``extensions``).
        path: the file it was read from, if any.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    spacing: tuple[float, ...] = ()
    source_format: str = "array"
    header: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim < 2:
            raise ValueError(f"a volume needs at least 2 axes, got shape {self.array.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine.shape}")
        self.affine = affine
        if not self.spacing:
            spatial = spacing_from_affine(affine, min(self.array.ndim, 3))
            self.spacing = spatial + (1.0,) * (self.array.ndim - len(spatial))
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != self.array.ndim:
            raise ValueError(
                f"spacing has {len(self.spacing)} entries for an array of shape {self.array.shape}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the stored array."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """Stored dtype."""
        return self.array.dtype

    @property
    def spatial_ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return min(self.array.ndim, 3)

    @property
    def value_scaling(self) -> tuple[float, float]:
        """(slope, intercept) that turn stored values into real-world values.

        Taken from the NIfTI ``scl_slope``/``scl_inter`` fields (the DICOM reader puts a
        series-wide Rescale Slope/Intercept there too); (1.0, 0.0) when they are
        absent, zero or not finite (the NIfTI rule for "no scaling").
        """
        slope = _as_float(self.header.get("scl_slope"))
        inter = _as_float(self.header.get("scl_inter"))
        if slope is None or slope == 0.0 or not math.isfinite(slope):
            return 1.0, 0.0
        if inter is None or not math.isfinite(inter):
            inter = 0.0
        return slope, inter

    @property
    def slice_rescale(self) -> list | None:
        """``[slope, intercept]`` per slice of the last axis when a DICOM source's Rescale varies
        per slice (``header["dicom"]["rescale"]``), else None (see :attr:`value_scaling`)."""
        dicom = self.header.get("dicom")
        return (dicom.get("rescale") or None) if isinstance(dicom, dict) else None

    def real_world_array(self) -> np.ndarray:
        """The voxel values with the source's scaling applied, as MONAI's readers return them.

        A per-slice DICOM Rescale (``header["dicom"]["rescale"]``, one pair per slice of the
        last axis) gives float32, and so does a series-wide one from a DICOM source (MONAI's
        ``PydicomReader`` computes in float32; under numpy 2 its result is float64). NIfTI
        ``scl_slope``/``scl_inter`` give float64, as nibabel applies them for MONAI's
        ``NibabelReader``. Without scaling the stored array itself is returned.
        """
        if self.slice_rescale:
            scale = np.asarray(self.slice_rescale, dtype=np.float64)
            return (self.array.astype(np.float64) * scale[:, 0] + scale[:, 1]).astype(np.float32)
        slope, inter = self.value_scaling
        if (slope, inter) == (1.0, 0.0):
            return self.array
        if isinstance(self.header.get("dicom"), dict):
            return self.array.astype(np.float32) * np.float32(slope) + np.float32(inter)
        return self.array.astype(np.float64) * slope + inter

    def slice_axis(self, override: int | None = None) -> int:
        """The axis to code as the frame axis: ``override`` if given, else the default rule."""
        if override is not None:
            return normalize_slice_axis(override, self.spatial_ndim)
        return default_slice_axis(self.spacing, self.spatial_ndim, shape=self.shape)


def spacing_from_affine(affine: np.ndarray, spatial_ndim: int = 3) -> tuple[float, ...]:
    """Voxel size along each of the first ``spatial_ndim`` axes (column norms of the affine)."""
    affine = np.asarray(affine, dtype=np.float64)
    norms = np.sqrt((affine[:3, :spatial_ndim] ** 2).sum(axis=0))
    return tuple(float(n) if n > 0 else 1.0 for n in norms)


def default_slice_axis(
    spacing: Sequence[float],
    spatial_ndim: int = 3,
    *,
    shape: Sequence[int] | None = None,
    rtol: float = 1e-3,
) -> int:
    """Default frame axis: the spatial axis with the largest voxel spacing.

    Ties (within ``rtol``) go to the last axis. Entries of ``spacing`` beyond
    ``spatial_ndim`` (time, ...) are ignored. When ``shape`` is given and some
    spatial axes have extent 1 (a single-slice volume), the last of those is
    chosen, whatever the spacing. For 2D data (``spatial_ndim == 2``) the result
    is 2: a virtual trailing axis of extent 1 (the image is one slice).
    """
    if spatial_ndim not in (2, 3):
        raise ValueError(f"spatial_ndim must be 2 or 3, got {spatial_ndim}")
    if spatial_ndim == 2:
        return 2
    if shape is not None:
        singletons = [a for a in range(spatial_ndim) if int(shape[a]) == 1]
        if singletons and len(singletons) < spatial_ndim:
            return singletons[-1]
    sp = [abs(float(s)) for s in spacing[:spatial_ndim]]
    if len(sp) < spatial_ndim:
        sp += [1.0] * (spatial_ndim - len(sp))
    sp = [s if math.isfinite(s) else 0.0 for s in sp]
    largest = max(sp)
    best = 0
    for axis, s in enumerate(sp):
        if math.isclose(s, largest, rel_tol=rtol) or s >= largest:
            best = axis
    return best


def normalize_slice_axis(axis: int, spatial_ndim: int) -> int:
    """Validate a user slice axis and return it non-negative (2D data: only 2 is valid)."""
    if spatial_ndim == 2:
        if axis != 2:
            raise ValueError("2D data is one slice; its slice axis can only be 2")
        return 2
    if not -spatial_ndim <= axis < spatial_ndim:
        raise ValueError(f"slice axis {axis} out of range for {spatial_ndim} spatial axes")
    return axis % spatial_ndim


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None

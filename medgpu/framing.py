"""Cutting a volume array into videos and GoPs, and putting it back together.

Layout rules (a :class:`FramePlan` records the outcome, it is JSON-serialisable):

* 2D (x, y): one slice, one video of one frame (the slice axis is a virtual axis 2).
* 3D (x, y, z): one video whose frames run along the slice axis.
* 4D and up (x, y, z, t, ...; axes after the third are flattened into "time"):
  ``mode="cine"`` (default when there are >= ``cine_min_frames`` time points):
  one video per slice position, frames along time; ``mode="slices"``
  (otherwise): one video per time point, frames along the slice axis.

A frame is the 2D image of the two spatial axes other than the slice axis, kept in
their file order: frame shape ``(H, W) = (shape[a], shape[b])`` with ``a < b``.
Each video is cut into GoPs of ``gop`` frames (the last one may be shorter); GoPs
are numbered in video order, then time order, and are independent (each starts
with an I-frame), so any GoP can be decoded on its own. Framing never pads
spatially: the codec pads frames to its stride itself. Framing is dtype-agnostic.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medgpu.volume import Volume, default_slice_axis, normalize_slice_axis

__all__ = [
    "DEFAULT_GOP",
    "CINE_MIN_FRAMES",
    "GopPlan",
    "FramePlan",
    "plan_frames",
    "plan_for_volume",
    "to_videos",
    "from_videos",
    "split_gops",
    "merge_gops",
    "gops_for_slices",
    "merge_slices",
]

DEFAULT_GOP = 30
CINE_MIN_FRAMES = 10
_MODES = ("slices", "cine")
_PLAN_VERSION = 1


@dataclass(frozen=True)
class GopPlan:
    """One GoP: frames ``start:stop`` of video ``video``; ``index`` is its packet order."""

    index: int
    video: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        """Number of frames in the GoP."""
        return self.stop - self.start


@dataclass(frozen=True)
class FramePlan:
    """How an array of ``shape`` is cut into videos and GoPs (see module doc)."""

    shape: tuple[int, ...]
    slice_axis: int
    mode: str = "slices"
    gop: int = DEFAULT_GOP

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"need an array with >= 2 non-empty axes, got shape {shape}")
        object.__setattr__(self, "slice_axis", normalize_slice_axis(int(self.slice_axis), min(len(shape), 3)))
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if int(self.gop) < 1:
            raise ValueError(f"gop must be >= 1, got {self.gop}")
        object.__setattr__(self, "gop", int(self.gop))

    # ------------------------------------------------------------------ geometry

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) with Z = 1 for 2D arrays."""
        s = self.shape
        return (s[0], s[1], s[2] if len(s) > 2 else 1)

    @property
    def n_slices(self) -> int:
        """Number of positions along the slice axis."""
        return self.spatial_shape[self.slice_axis]

    @property
    def n_times(self) -> int:
        """Product of the axes after the third (1 for 2D/3D)."""
        return math.prod(self.shape[3:]) if len(self.shape) > 3 else 1

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(H, W) of every frame."""
        x, y, z = self.spatial_shape
        h, w = [n for axis, n in enumerate((x, y, z)) if axis != self.slice_axis]
        return h, w

    @property
    def n_videos(self) -> int:
        """Number of videos."""
        return self.n_slices if self.mode == "cine" else self.n_times

    @property
    def frames_per_video(self) -> int:
        """Number of frames in every video."""
        return self.n_times if self.mode == "cine" else self.n_slices

    @property
    def gops(self) -> tuple[GopPlan, ...]:
        """Every GoP, in packet order."""
        out = []
        for video in range(self.n_videos):
            for start in range(0, self.frames_per_video, self.gop):
                stop = min(start + self.gop, self.frames_per_video)
                out.append(GopPlan(len(out), video, start, stop))
        return tuple(out)

    @property
    def n_gops(self) -> int:
        """Number of GoPs."""
        return self.n_videos * math.ceil(self.frames_per_video / self.gop)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (the GoP list follows from it)."""
        return {
            "version": _PLAN_VERSION,
            "shape": list(self.shape),
            "slice_axis": self.slice_axis,
            "mode": self.mode,
            "gop": self.gop,
            "n_gops": self.n_gops,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FramePlan:
        """Inverse of :meth:`to_dict`; checks the version and the GoP count."""
        version = int(values.get("version", _PLAN_VERSION))
        if version != _PLAN_VERSION:
            raise ValueError(f"unknown frame plan version {version}")
        plan = cls(tuple(values["shape"]), int(values["slice_axis"]), str(values["mode"]), int(values["gop"]))
        if "n_gops" in values and int(values["n_gops"]) != plan.n_gops:
            raise ValueError("frame plan is inconsistent: n_gops does not match shape and gop")
        return plan


# ---------------------------------------------------------------------- planning


def plan_frames(
    shape: Sequence[int],
    *,
    spacing: Sequence[float] | None = None,
    slice_axis: int | None = None,
    gop: int = DEFAULT_GOP,
    mode: str | None = None,
    cine_min_frames: int = CINE_MIN_FRAMES,
) -> FramePlan:
    """Plan the framing of an array of ``shape``.

    ``slice_axis`` defaults to :func:`medgpu.volume.default_slice_axis` on
    ``spacing`` (isotropic if missing); ``mode`` defaults to "cine" when the
    axes after the third hold >= ``cine_min_frames`` points, else "slices".
    """
    shape = tuple(int(s) for s in shape)
    spatial_ndim = min(len(shape), 3)
    if slice_axis is None:
        sp = tuple(spacing) if spacing is not None else (1.0,) * spatial_ndim
        slice_axis = default_slice_axis(sp, spatial_ndim, shape=shape[:spatial_ndim])
    n_times = math.prod(shape[3:]) if len(shape) > 3 else 1
    if mode is None:
        mode = "cine" if n_times >= cine_min_frames else "slices"
    return FramePlan(shape, slice_axis, mode, gop)


def plan_for_volume(volume: Volume, **options: Any) -> FramePlan:
    """:func:`plan_frames` for a :class:`Volume` (its shape and spacing)."""
    options.setdefault("spacing", volume.spacing)
    return plan_frames(volume.shape, **options)


# ---------------------------------------------------------------------- splitting


def to_videos(array: np.ndarray, plan: FramePlan) -> list[np.ndarray]:
    """Cut ``array`` into ``plan.n_videos`` contiguous videos of shape [T, H, W]."""
    view = _frames_view(_check_array(array, plan), plan)
    if plan.mode == "cine":
        return [np.ascontiguousarray(view[s]) for s in range(plan.n_slices)]
    return [np.ascontiguousarray(view[:, t]) for t in range(plan.n_times)]


def from_videos(videos: Sequence[np.ndarray], plan: FramePlan) -> np.ndarray:
    """Inverse of :func:`to_videos`."""
    if len(videos) != plan.n_videos:
        raise ValueError(f"expected {plan.n_videos} videos, got {len(videos)}")
    gops = [np.asarray(videos[g.video])[g.start : g.stop] for g in plan.gops]
    return merge_gops(gops, plan)


def split_gops(array: np.ndarray, plan: FramePlan) -> list[np.ndarray]:
    """Cut ``array`` into the GoPs of ``plan`` (contiguous [t, H, W] arrays, packet order)."""
    view = _frames_view(_check_array(array, plan), plan)
    out = []
    for g in plan.gops:
        if plan.mode == "cine":
            out.append(np.ascontiguousarray(view[g.video, g.start : g.stop]))
        else:
            out.append(np.ascontiguousarray(view[g.start : g.stop, g.video]))
    return out


def merge_gops(gops: Sequence[np.ndarray], plan: FramePlan, dtype: Any = None) -> np.ndarray:
    """Reassemble the full array (``plan.shape``) from all GoPs in packet order."""
    if len(gops) != plan.n_gops:
        raise ValueError(f"expected {plan.n_gops} GoPs, got {len(gops)}")
    return merge_slices(dict(enumerate(gops)), plan, 0, plan.n_slices, dtype=dtype)


# ---------------------------------------------------------------------- partial decoding


def gops_for_slices(plan: FramePlan, start: int, stop: int) -> list[int]:
    """Indices of the GoPs needed to rebuild slices ``start:stop`` (all time points)."""
    start, stop = _check_range(plan, start, stop)
    if plan.mode == "cine":
        return [g.index for g in plan.gops if start <= g.video < stop]
    return [g.index for g in plan.gops if g.start < stop and g.stop > start]


def merge_slices(
    gops: Mapping[int, np.ndarray],
    plan: FramePlan,
    start: int,
    stop: int,
    dtype: Any = None,
) -> np.ndarray:
    """Rebuild slices ``start:stop`` from decoded GoPs (keyed by GoP index).

    The result has ``plan.shape`` with the slice axis cut to ``stop - start``
    (for 2D plans: the 2D array). Needs at least :func:`gops_for_slices`.
    """
    start, stop = _check_range(plan, start, stop)
    needed = gops_for_slices(plan, start, stop)
    missing = [i for i in needed if i not in gops]
    if missing:
        raise KeyError(f"GoPs {missing} are needed for slices {start}:{stop}")
    if dtype is None:
        dtype = np.asarray(gops[needed[0]]).dtype
    x, y, z = plan.spatial_shape
    sub = [x, y, z]
    sub[plan.slice_axis] = stop - start
    canonical = np.empty((*sub, plan.n_times), dtype=dtype)
    view = np.moveaxis(canonical, (plan.slice_axis, 3), (0, 1))  # (S', T, H, W), writable view
    table = plan.gops
    for index in needed:
        g = table[index]
        data = np.asarray(gops[index])
        if data.shape != (g.length, *plan.frame_shape):
            raise ValueError(f"GoP {index} has shape {data.shape}, expected {(g.length, *plan.frame_shape)}")
        if plan.mode == "cine":
            view[g.video - start, g.start : g.stop] = data
        else:
            lo, hi = max(g.start, start), min(g.stop, stop)
            view[lo - start : hi - start, g.video] = data[lo - g.start : hi - g.start]
    out_shape = list(plan.shape)
    if len(out_shape) >= 3:
        out_shape[plan.slice_axis] = stop - start
    return canonical.reshape(out_shape)


# ---------------------------------------------------------------------- helpers


def _check_array(array: np.ndarray, plan: FramePlan) -> np.ndarray:
    array = np.asarray(array)
    if tuple(array.shape) != plan.shape:
        raise ValueError(f"array shape {array.shape} does not match the plan's {plan.shape}")
    return array


def _frames_view(array: np.ndarray, plan: FramePlan) -> np.ndarray:
    """View of ``array`` as (S, T, H, W): slice, time, frame rows, frame columns."""
    canonical = array.reshape(*plan.spatial_shape, plan.n_times)
    return np.moveaxis(canonical, (plan.slice_axis, 3), (0, 1))


def _check_range(plan: FramePlan, start: int, stop: int) -> tuple[int, int]:
    start, stop = int(start), int(stop)
    if not 0 <= start < stop <= plan.n_slices:
        raise ValueError(f"slice range {start}:{stop} is not inside 0:{plan.n_slices}")
    return start, stop

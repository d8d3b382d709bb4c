"""MONAI array transforms that compress and decompress with medgpu inside a ``Compose``.

* :class:`CompressToMgpu`: image (MetaTensor, tensor or array) -> ``.mgpu`` path, or the
  stream's bytes when no output is set.
* :class:`DecompressMgpu`: ``.mgpu`` path or bytes -> MetaTensor (via ``LoadImage`` and
  :class:`~medgpu.io.mgpu_reader.MgpuReader`).
* :class:`MgpuRoundTrip`: compress and decode in memory; the output has the input's type,
  shape, dtype and meta, with the decoded values (to study a model under compression).

Each transform loads its codec once, on first use, and keeps it.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.transforms.transform import Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type

from medgpu.convert import (
    ChannelDim,
    CodecCache,
    compress,
    compress_to_bytes,
    decompress,
    resolve_channel_dim,
    to_volume,
)
from medgpu.errors import OptionError
from medgpu.framing import DEFAULT_GOP
from medgpu.io.mgpu_reader import MgpuReader

if TYPE_CHECKING:  # pragma: no cover
    from monai.data import MetaTensor

    from medgpu.codec.registry import VolumeCodec

__all__ = ["CompressToMgpu", "DecompressMgpu", "MgpuRoundTrip"]

_SOURCE_SUFFIXES = (".nii.gz", ".nii", ".mgpu", ".dcm", ".npy", ".npz", ".nrrd", ".mha", ".mhd")


def _affine_of(img: Any, meta_data: Mapping[str, Any] | None) -> Any:
    """The image's own affine (MetaTensor), else ``meta_data["affine"]``, else None."""
    if hasattr(img, "affine") and hasattr(img, "meta"):
        return None  # to_volume takes the MetaTensor's own
    if meta_data is not None and meta_data.get("affine") is not None:
        return meta_data["affine"]
    return None


def _source_name(img: Any, meta_data: Mapping[str, Any] | None) -> str | None:
    meta = getattr(img, "meta", None) or meta_data or {}
    name = meta.get("filename_or_obj")
    if not isinstance(name, (str, Path)) or not str(name):
        return None
    base = Path(name).name
    for suffix in _SOURCE_SUFFIXES:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


class CompressToMgpu(Transform):
    """Compress an image to a ``.mgpu`` stream; returns its path (str), or its bytes when
    neither ``out_dir`` nor ``out_path`` is given.

    Args:
        out_dir: folder of the streams (created if missing); file ``{name}.mgpu`` unless
            ``out_path`` says otherwise.
        out_path: file name template, relative to ``out_dir`` if given; fields ``{name}``
            (source file name without suffix, from ``filename_or_obj``, else
            ``image_{index}``), ``{index}`` (running count of calls), ``{quality}``, ``{key}``.
        quality, gop, slice_axis, device: as :func:`medgpu.compress`.
        channel_dim: channel axis of the input ("auto": MetaTensors are channel first).
        codec: a loaded codec (default: the shipped one, loaded on first call).
        overwrite: replace existing streams (default True, like MONAI's ``SaveImage``).

    The report of the last call is kept in ``last_report``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        out_dir: str | Path | None = None,
        out_path: str | None = None,
        quality: int | None = None,
        gop: int = DEFAULT_GOP,
        slice_axis: int | None = None,
        channel_dim: ChannelDim = "auto",
        device: str = "auto",
        codec: VolumeCodec | None = None,
        overwrite: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.out_path = out_path
        self.options: dict[str, Any] = {"quality": quality, "gop": gop, "slice_axis": slice_axis}
        self.channel_dim = channel_dim
        self.overwrite = overwrite
        self._codecs = CodecCache(codec, device)
        self._counter = itertools.count()
        self.last_report: dict[str, Any] | None = None

    def target(self, img: Any, meta_data: Mapping[str, Any] | None = None, key: str | None = None) -> Path | None:
        """The output path for ``img`` (advances the running index), None for bytes."""
        index = next(self._counter)
        if self.out_dir is None and self.out_path is None:
            return None
        fields = {"name": _source_name(img, meta_data) or f"image_{index}", "index": index,
                  "quality": self.options["quality"], "key": key or ""}
        try:
            rel = self.out_path.format(**fields) if self.out_path else f"{fields['name']}.mgpu"
        except (KeyError, IndexError, ValueError) as exc:
            raise OptionError(f"out_path template {self.out_path!r}: {exc!r} (fields: {', '.join(fields)})") from None
        return (self.out_dir / rel) if self.out_dir is not None else Path(rel)

    def __call__(self, img: Any, meta_data: Mapping[str, Any] | None = None, key: str | None = None) -> str | bytes:
        """Compress ``img`` (its affine: a MetaTensor's own, else ``meta_data["affine"]``);
        a file path (NIfTI, DICOM) is compressed as it is."""
        if isinstance(img, (str, os.PathLike)):
            volume: Any = img
            meta_data = {"filename_or_obj": os.fspath(img)}
        else:
            volume = to_volume(img, _affine_of(img, meta_data), channel_dim=self.channel_dim)
        kwargs = dict(self.options, device=self._codecs.resolved_device(), codec=self._codecs.get())
        path = self.target(img, meta_data, key)
        if path is None:
            data, self.last_report = compress_to_bytes(volume, **kwargs)
            return data
        # missing folders are made just before the stream is written, not now: a concurrent call
        # (a DataLoader worker) that fails removes the folders it made if they are still empty,
        # and would pull them from under this one while it reads and encodes its input
        self.last_report = compress(volume, path, overwrite=self.overwrite, make_dirs=True, **kwargs)
        return str(path)


class DecompressMgpu(Transform):
    """Decode a ``.mgpu`` path or stream bytes to a MetaTensor, as ``LoadImage`` with
    :class:`~medgpu.io.mgpu_reader.MgpuReader` would.

    Args:
        slice_range: ``(start, stop)`` along the stream's slice axis (only those GoPs are decoded).
        ensure_channel_first: add/move a channel axis first (``LoadImage``'s option).
        dtype: output dtype (default float32 as ``LoadImage``; None keeps the stored dtype).
        device, codec: codec device and a loaded codec (default: the stream's, loaded once).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        slice_range: tuple[int, int] | None = None,
        ensure_channel_first: bool = False,
        dtype: Any = np.float32,
        device: str = "auto",
        codec: VolumeCodec | None = None,
    ) -> None:
        from monai.transforms import LoadImage

        self.reader = MgpuReader(slice_range=slice_range, device=device, codec=codec)
        self.loader = LoadImage(reader=self.reader, image_only=True, dtype=dtype,
                                ensure_channel_first=ensure_channel_first)

    def __call__(self, src: str | Path | bytes) -> MetaTensor:
        """Decode ``src``; for bytes, ``filename_or_obj`` is left out of the meta."""
        if isinstance(src, (bytes, bytearray, memoryview)):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="medgpu_") as td:
                path = Path(td) / "stream.mgpu"
                path.write_bytes(bytes(src))
                out = self.loader(path)
            out.meta.pop("filename_or_obj", None)
            return out
        return self.loader(src)


class MgpuRoundTrip(Transform):
    """Compress and decode ``img`` in memory: same type, shape, dtype, device and meta as
    the input, values as a medgpu decoder would give them.

    A MetaTensor's meta gains ``mgpu_bits_per_voxel``, ``mgpu_psnr`` and ``mgpu_quality``;
    ``last_report`` holds the whole report of the last call.

    Args:
        quality, gop, slice_axis, device: as :func:`medgpu.compress`.
        channel_dim: channel axis of the input ("auto": MetaTensors are channel first;
            channels share one stream as the volume's extra axes).
        codec: a loaded codec (default: the shipped one, loaded on first call).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        quality: int | None = None,
        gop: int = DEFAULT_GOP,
        slice_axis: int | None = None,
        channel_dim: ChannelDim = "auto",
        device: str = "auto",
        codec: VolumeCodec | None = None,
    ) -> None:
        self.options: dict[str, Any] = {"quality": quality, "gop": gop, "slice_axis": slice_axis}
        self.channel_dim = channel_dim
        self._codecs = CodecCache(codec, device)
        self.last_report: dict[str, Any] | None = None

    def __call__(self, img: Any, affine: Any = None) -> Any:
        """Round-trip ``img``; ``affine`` (for plain arrays) only steers the default slice axis."""
        cd = resolve_channel_dim(img, self.channel_dim)
        volume = to_volume(img, affine, channel_dim=cd)
        codec, device = self._codecs.get(), self._codecs.resolved_device()
        data, report = compress_to_bytes(volume, device=device, codec=codec, **self.options)
        decoded = decompress(data, device=device, codec=codec).array
        shape = tuple(img.shape)
        if cd is None:
            out = decoded.reshape(shape)
        else:  # undo to_volume: channel back from the last axis
            moved = shape[:cd] + shape[cd + 1:] + (shape[cd],)
            out = np.moveaxis(decoded.reshape(moved), -1, cd)
        self.last_report = report
        result = convert_to_dst_type(np.ascontiguousarray(out), img)[0]
        if isinstance(result, torch.Tensor) and hasattr(result, "meta"):
            result.meta.update(mgpu_bits_per_voxel=float(report["bits_per_voxel"]),
                               mgpu_psnr=float(report["psnr"]), mgpu_quality=int(report["quality"]))
        return result

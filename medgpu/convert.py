"""Arrays, torch tensors and MONAI ``MetaTensor``s to :class:`~medgpu.volume.Volume` and back,
and the in-memory face of the API (``medgpu.compress`` / ``medgpu.decompress``).

Layout conventions:

* A :class:`Volume` is *spatial first*: ``(x, y)``, ``(x, y, z)`` or ``(x, y, z, t, ...)``.
* Plain numpy arrays and torch tensors are taken as spatial first too (``channel_dim=None``),
  with the ``affine`` given beside them (identity when omitted).
* A ``MetaTensor`` carries its affine. With ``channel_dim="auto"`` it is taken as
  MONAI's *channel first* ``(C, x, y[, z])`` when it has one axis more than its spatial
  rank (the length of ``meta["spatial_shape"]``, else the affine's rank), otherwise as
  having no channel (what ``LoadImage`` returns before ``EnsureChannelFirst``).
* Channels are coded as the volume's extra axes (``(x, y, z, C)``, a single channel is
  dropped), so every channel shares one stream, one affine and one slice axis.

Heavy modules (torch, MONAI) are imported only when an argument needs them.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medgpu.errors import OptionError
from medgpu.framing import DEFAULT_GOP
from medgpu.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from medgpu.bitstream.container import StreamHeader
    from medgpu.codec.registry import VolumeCodec

__all__ = [
    "ChannelDim",
    "CodecCache",
    "Output",
    "compress",
    "compress_to_bytes",
    "decompress",
    "from_volume",
    "is_array_like",
    "resolve_channel_dim",
    "shift_affine",
    "to_volume",
    "volume_meta",
]

PathLike = str | os.PathLike[str]
ChannelDim = int | None | Literal["auto"]
Output = Literal["volume", "numpy", "torch", "metatensor"]
Progress = Callable[[str, int, int], None]
_OUTPUTS = ("volume", "numpy", "torch", "metatensor")


# ------------------------------------------------------------------------------ type checks


def _is_tensor(data: Any) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(data, torch.Tensor)


def _is_metatensor(data: Any) -> bool:
    if "monai.data" not in sys.modules:  # nothing can be a MetaTensor before MONAI is imported
        return False
    from monai.data import MetaTensor

    return isinstance(data, MetaTensor)


def is_array_like(data: Any) -> bool:
    """True for numpy arrays, torch tensors and MetaTensors (not paths, bytes or Volumes)."""
    return isinstance(data, np.ndarray) or _is_tensor(data)


def _is_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


# ------------------------------------------------------------------------------ geometry


def _affine_4x4(affine: Any) -> np.ndarray:
    """A 4x4 float64 affine from a 4x4, a 3x3 (2-D, MONAI) or a torch tensor."""
    if _is_tensor(affine):
        affine = affine.detach().cpu().numpy()
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a.copy()
    if a.shape == (3, 3):  # 2-D homogeneous affine: embed, z untouched
        out = np.eye(4)
        out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
        return out
    raise OptionError(f"affine must be 4x4 (or 3x3 for 2-D data), got shape {a.shape}")


def shift_affine(affine: np.ndarray, axis: int, start: int) -> np.ndarray:
    """The affine of a sub-volume that starts at index ``start`` along spatial ``axis``."""
    out = np.array(affine, dtype=np.float64, copy=True)
    if start and 0 <= axis < 3:
        out[:3, 3] += out[:3, axis] * start
    return out


def resolve_channel_dim(data: Any, channel_dim: ChannelDim = "auto") -> int | None:
    """The channel axis of ``data`` (non-negative) or None; see the module doc for "auto"."""
    ndim = int(data.ndim)
    if channel_dim == "auto":
        if not _is_metatensor(data):
            return None
        shape = data.meta.get("spatial_shape")
        rank = len(np.atleast_1d(np.asarray(shape))) if shape is not None else int(data.affine.shape[-1]) - 1
        return 0 if ndim == rank + 1 else None
    if channel_dim is None:
        return None
    if isinstance(channel_dim, str):
        if channel_dim == "no_channel":
            return None
        raise OptionError(f"channel_dim must be an int, None, 'no_channel' or 'auto', got {channel_dim!r}")
    if isinstance(channel_dim, float) and math.isnan(channel_dim):
        return None
    cd = int(channel_dim)
    if not -ndim <= cd < ndim:
        raise OptionError(f"channel_dim {channel_dim} out of range for {ndim} axes")
    return cd % ndim


# ------------------------------------------------------------------------------ to / from Volume


def _to_numpy(data: Any) -> np.ndarray:
    if _is_tensor(data):
        import torch

        return torch.Tensor.numpy(data.detach().cpu().as_subclass(torch.Tensor))
    return np.asarray(data)


def to_volume(
    data: Any,
    affine: Any = None,
    *,
    channel_dim: ChannelDim = "auto",
    spacing: Sequence[float] | None = None,
    header: Mapping[str, Any] | None = None,
) -> Volume:
    """A :class:`Volume` from a numpy array, torch tensor or MetaTensor (+ ``affine``).

    ``affine`` overrides a MetaTensor's own; without either, the identity. The channel
    axis (see :func:`resolve_channel_dim`) becomes the last axis (dropped if it has one
    channel; a 2-D image with channels gets a singleton z first, ``(x, y, 1, C)``).
    """
    if isinstance(data, Volume):
        return data
    if isinstance(data, (list, tuple)):
        data = np.asarray(data)
    if not is_array_like(data):
        raise OptionError(f"expected a numpy array, torch tensor or MetaTensor, got {type(data).__name__}")
    path = None
    if affine is None and _is_metatensor(data):
        affine = data.affine
    if _is_metatensor(data):
        name = data.meta.get("filename_or_obj")
        path = name if isinstance(name, str) and name else None
    cd = resolve_channel_dim(data, channel_dim)
    array = _to_numpy(data)
    spatial = array.ndim - (cd is not None)
    if affine is not None and spatial >= 3 and np.shape(_to_numpy(affine)) != (4, 4):
        raise OptionError(f"affine must be 4x4 for data with {spatial} spatial axes, got shape "
                          f"{np.shape(_to_numpy(affine))}")
    if cd is not None:
        array = np.moveaxis(array, cd, -1)
        if array.shape[-1] == 1:
            array = array[..., 0]
        elif array.ndim == 3:  # 2-D with channels: (x, y, C) -> (x, y, 1, C)
            array = array[:, :, None, :]
    if array.ndim < 2:
        raise OptionError(f"need at least 2 spatial axes, got shape {tuple(array.shape)}")
    if array.dtype.kind not in "biuf":
        raise OptionError(f"cannot code voxel type {array.dtype}")
    return Volume(
        array=np.ascontiguousarray(array),
        affine=np.eye(4) if affine is None else _affine_4x4(affine),
        spacing=tuple(spacing) if spacing is not None else (),
        source_format="array",
        header=dict(header or {}),
        path=path,
    )


def volume_meta(volume: Volume, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """MONAI meta dict of a Volume as an ``ImageReader`` returns it (array not channel first).

    ``affine`` and ``original_affine`` (float64 4x4), ``spatial_shape``,
    ``original_channel_dim`` (nan = no channel; -1 for 4-D+ volumes, as nibabel's reader),
    ``space`` ("RAS"), ``spacing``, ``source_format``, plus ``extra``; for a NIfTI source
    also the header fields that MONAI's ``NibabelReader`` gives (``pixdim``, ``dim``,
    ``qform_code``, ...: :func:`medgpu.io.nifti.reader_meta`).
    """
    from medgpu.io.nifti import reader_meta

    affine = np.asarray(volume.affine, dtype=np.float64)
    nspatial = volume.spatial_ndim
    meta: dict[str, Any] = reader_meta(volume)
    meta |= {
        "affine": affine.copy(),
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(volume.shape[:nspatial]),
        "original_channel_dim": float("nan") if volume.array.ndim <= 3 else -1,
        "space": "RAS",
        "spacing": np.asarray(volume.spacing[:nspatial], dtype=np.float64),
        "source_format": volume.source_format,
    }
    if volume.path:
        meta["filename_or_obj"] = str(volume.path)
    meta.update(extra or {})
    return meta


def _channel_first(array: np.ndarray) -> np.ndarray:
    if array.ndim <= 3:
        return array[None]
    flat = array.reshape(array.shape[:3] + (-1,))  # extra axes -> one channel axis
    return np.moveaxis(flat, -1, 0)


def from_volume(
    volume: Volume,
    output: Output = "metatensor",
    *,
    channel_first: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> Any:
    """A Volume as ``"metatensor"`` (MetaTensor with MONAI meta), ``"numpy"`` / ``"torch"``
    (``(array, affine)`` pairs, torchio style) or ``"volume"`` (itself).

    The arrays hold real-world values (:meth:`Volume.real_world_array`: the source's NIfTI or
    DICOM scaling applied, as MONAI's and torchio's readers give them); the Volume keeps the
    stored values and the scaling in its header.

    ``channel_first`` puts a channel axis first (the extra axes of a 4-D+ volume, else a
    new axis of 1). ``meta`` adds keys to the MetaTensor's meta.
    """
    if output not in _OUTPUTS:
        raise OptionError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
    if output == "volume":
        return volume
    array = volume.real_world_array()
    array = _channel_first(array) if channel_first else array
    affine = np.asarray(volume.affine, dtype=np.float64)
    if output == "numpy":
        return array, affine
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if output == "torch":
        return tensor, torch.from_numpy(affine.copy())
    from monai.data import MetaTensor

    info = volume_meta(volume, extra=meta)
    info.pop("affine")  # given as the affine argument (MONAI warns when both are set)
    return MetaTensor(tensor, affine=torch.from_numpy(affine.copy()), meta=info)


# ------------------------------------------------------------------------------ codec cache


class CodecCache:
    """Loads a codec on first use and keeps it, one per codec id (readers and transforms
    decode many streams; loading the weights each time would dominate).

    ``codec`` (a loaded :class:`VolumeCodec`) is used for everything when given.
    """

    def __init__(self, codec: VolumeCodec | None = None, device: str = "auto") -> None:
        self.codec = codec
        self.device = device
        self._loaded: dict[str | None, VolumeCodec] = {}

    def resolved_device(self) -> str:
        """The concrete device ("cpu", "cuda", "cuda:N")."""
        from medgpu.api import resolve_device

        return resolve_device(self.device)

    def get(self, codec_id: str | None = None) -> VolumeCodec:
        """The given codec, else codec ``codec_id`` (None: the default), loaded once."""
        if self.codec is not None:
            return self.codec
        if codec_id not in self._loaded:
            from medgpu.api import _load_codec

            self._loaded[codec_id] = _load_codec(codec_id, self.resolved_device())
        return self._loaded[codec_id]

    def for_stream(self, path: PathLike) -> VolumeCodec:
        """The codec that decodes the stream at ``path`` (by the codec id in its header)."""
        from medgpu.api import read_header

        return self.get(None if self.codec is not None else read_header(path).codec_id)

    def __getstate__(self) -> dict[str, Any]:  # workers reload instead of pickling networks
        return {"codec": self.codec, "device": self.device, "_loaded": {}}


# ------------------------------------------------------------------------------ public API


def compress(
    src: Any,
    out: PathLike | None = None,
    *,
    affine: Any = None,
    channel_dim: ChannelDim = "auto",
    quality: int | None = None,
    gop: int = DEFAULT_GOP,
    slice_axis: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = False,
    codec: VolumeCodec | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Compress a file, a :class:`Volume`, a numpy array / torch tensor (+ ``affine``) or a
    MetaTensor to ``out`` (.mgpu + .mgpu.json sidecar); returns the report of
    :func:`medgpu.api.compress`. In-memory data need ``out``; see :func:`compress_to_bytes`.
    Further keywords (``options``) go to :func:`medgpu.api.compress` as they are.
    """
    from medgpu import api

    if is_array_like(src) or isinstance(src, (list, tuple)):
        src = to_volume(src, affine, channel_dim=channel_dim)
    elif affine is not None:
        raise OptionError("affine= applies to arrays and tensors only (files and Volumes carry their own)")
    return api.compress(src, out, quality=quality, gop=gop, slice_axis=slice_axis, device=device,
                        progress=progress, overwrite=overwrite, codec=codec, **options)


def compress_to_bytes(src: Any, **kwargs: Any) -> tuple[bytes, dict[str, Any]]:
    """:func:`compress` into memory: ``(stream bytes, report)``; the sidecar is not kept."""
    with tempfile.TemporaryDirectory(prefix="medgpu_") as td:
        out = Path(td) / "stream.mgpu"
        report = compress(src, out, **kwargs)
        data = out.read_bytes()
    report = {k: v for k, v in report.items() if k not in ("stream", "sidecar")}
    return data, report


def _volume_of_range(path: PathLike, start: int, stop: int, device: str,
                     codec: VolumeCodec | None) -> Volume:
    from medgpu import api

    header: StreamHeader = api.read_header(path)
    array = api.decode_slices(path, start, stop, device=device, codec=codec)
    volume = api._volume_from(header, array)
    volume.affine = shift_affine(volume.affine, header.slice_axis, start)
    if volume.slice_rescale and header.slice_axis == 2:
        # a per-slice Rescale lists the DICOM slices (the last axis): keep those of the range
        dicom = volume.header["dicom"]
        volume.header = {**volume.header, "dicom": {**dicom, "rescale": volume.slice_rescale[start:stop]}}
    return volume


def decompress(
    src: PathLike | bytes,
    out: PathLike | None = None,
    *,
    output: Output = "volume",
    channel_first: bool = False,
    slice_range: tuple[int, int] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = False,
    codec: VolumeCodec | None = None,
) -> Any:
    """Decode a ``.mgpu`` file (or its bytes) to ``output`` (see :func:`from_volume`):
    a :class:`Volume` (default), ``(array, affine)``, ``(tensor, affine)`` or a MetaTensor.

    ``out`` also writes NIfTI (whole volume only). ``slice_range=(start, stop)`` decodes
    only the GoPs that cover those slices along the stream's slice axis; the affine is
    shifted to the first slice of the range.
    """
    from medgpu import api

    if output not in _OUTPUTS:
        raise OptionError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
    if isinstance(src, (bytes, bytearray, memoryview)):
        with tempfile.TemporaryDirectory(prefix="medgpu_") as td:
            path = Path(td) / "stream.mgpu"
            path.write_bytes(bytes(src))
            return decompress(path, out, output=output, channel_first=channel_first, slice_range=slice_range,
                              device=device, progress=progress, overwrite=overwrite, codec=codec)
    if slice_range is not None:
        if out is not None:
            raise OptionError("slice_range= decodes part of a volume; it cannot be written with out=")
        start, stop = slice_range
        volume = _volume_of_range(src, start, stop, device, codec)
        volume.path = str(src)
    else:
        volume = api.decompress(src, out, device=device, progress=progress, overwrite=overwrite, codec=codec)
        volume.path = volume.path or str(src)
    return from_volume(volume, output, channel_first=channel_first)

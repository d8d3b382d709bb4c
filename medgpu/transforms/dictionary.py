"""Dictionary forms of :mod:`medgpu.transforms.array` (MONAI ``MapTransform`` wrappers).

``CompressToMgpud`` replaces each key's image by its stream path (or bytes) and keeps the
image's meta in ``{key}_meta_dict`` (as ``LoadImaged(image_only=False)`` does), so that
``DecompressMgpud`` can give the decoded MetaTensor back its non-geometry meta
(``filename_or_obj``, ...); geometry (affine, shape) always comes from the stream.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms.transform import MapTransform
from monai.utils import PostFix, ensure_tuple_rep

from medgpu.convert import ChannelDim
from medgpu.framing import DEFAULT_GOP
from medgpu.transforms.array import CompressToMgpu, DecompressMgpu, MgpuRoundTrip

if TYPE_CHECKING:  # pragma: no cover
    from medgpu.codec.registry import VolumeCodec

__all__ = [
    "CompressToMgpuD",
    "CompressToMgpuDict",
    "CompressToMgpud",
    "DecompressMgpuD",
    "DecompressMgpuDict",
    "DecompressMgpud",
    "MgpuRoundTripD",
    "MgpuRoundTripDict",
    "MgpuRoundTripd",
]

DEFAULT_POST_FIX = PostFix.meta()


class _MetaKeyedTransform(MapTransform):
    """A ``MapTransform`` whose keys each have a meta dict: ``meta_keys``, else
    ``{key}_{meta_key_postfix}`` (none when both are None)."""

    def __init__(
        self,
        keys: KeysCollection,
        meta_keys: KeysCollection | None,
        meta_key_postfix: str | None,
        allow_missing_keys: bool,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.meta_keys = ensure_tuple_rep(meta_keys, len(self.keys))
        self.meta_key_postfix = ensure_tuple_rep(meta_key_postfix, len(self.keys))

    def _meta_items(self, d: Mapping[Hashable, Any]) -> Iterator[tuple[Hashable, Hashable | None, Any]]:
        """``(key, meta_key, meta)`` for each key in ``d`` (as ``key_iterator``); ``meta_key``
        None when the key has no meta dict, ``meta`` None when ``d`` lacks it. Read lazily, so
        changes to ``d`` between items are seen."""
        for key, meta_key, postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            if meta_key is None and postfix is not None:
                meta_key = f"{key}_{postfix}"
            yield key, meta_key, (d.get(meta_key) if meta_key is not None else None)


class CompressToMgpud(_MetaKeyedTransform):
    """Dictionary-based :class:`~medgpu.transforms.array.CompressToMgpu`.

    Args:
        keys: keys of the images to compress.
        out_dir, out_path, quality, gop, slice_axis, channel_dim, device, codec, overwrite:
            as the array form (``{key}`` in ``out_path`` is the key).
        meta_keys: keys of the meta dicts (affine of plain arrays; where the meta is kept).
        meta_key_postfix: if ``meta_keys`` is None, ``{key}_{meta_key_postfix}``;
            None: do not keep the meta of MetaTensors.
        report_key_postfix: if set, the compression report goes to ``{key}_{postfix}``.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        out_dir: str | Path | None = None,
        out_path: str | None = None,
        quality: int | None = None,
        gop: int = DEFAULT_GOP,
        slice_axis: int | None = None,
        channel_dim: ChannelDim = "auto",
        device: str = "auto",
        codec: VolumeCodec | None = None,
        overwrite: bool = True,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str | None = DEFAULT_POST_FIX,
        report_key_postfix: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, meta_keys, meta_key_postfix, allow_missing_keys)
        self.compressor = CompressToMgpu(out_dir, out_path, quality, gop, slice_axis, channel_dim, device, codec,
                                         overwrite)
        self.report_key_postfix = report_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key, meta in self._meta_items(d):
            img = d[key]
            d[key] = self.compressor(img, meta_data=meta, key=str(key))
            if meta_key is not None and hasattr(img, "meta") and meta_key not in d:
                d[meta_key] = dict(img.meta)
            if self.report_key_postfix is not None:
                d[f"{key}_{self.report_key_postfix}"] = self.compressor.last_report
        return d


class DecompressMgpud(_MetaKeyedTransform):
    """Dictionary-based :class:`~medgpu.transforms.array.DecompressMgpu`.

    Meta entries of ``{key}_meta_dict`` (left by :class:`CompressToMgpud`) that the decoded
    meta lacks are copied into it; the meta dict is then removed (``keep_meta_dict`` keeps it).

    Args:
        keys: keys of the ``.mgpu`` paths or stream bytes.
        slice_range, ensure_channel_first, dtype, device, codec: as the array form.
        meta_keys, meta_key_postfix: where to find the carried meta dicts.
        keep_meta_dict: leave the carried meta dicts in the data.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        slice_range: tuple[int, int] | None = None,
        ensure_channel_first: bool = False,
        dtype: Any = np.float32,
        device: str = "auto",
        codec: VolumeCodec | None = None,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str | None = DEFAULT_POST_FIX,
        keep_meta_dict: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, meta_keys, meta_key_postfix, allow_missing_keys)
        self.decompressor = DecompressMgpu(slice_range, ensure_channel_first, dtype, device, codec)
        self.keep_meta_dict = keep_meta_dict

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key, carried in self._meta_items(d):
            img = self.decompressor(d[key])
            if isinstance(carried, Mapping):
                for k, v in carried.items():
                    img.meta.setdefault(k, v)
                if not self.keep_meta_dict:
                    d.pop(meta_key)
            d[key] = img
        return d


class MgpuRoundTripd(_MetaKeyedTransform):
    """Dictionary-based :class:`~medgpu.transforms.array.MgpuRoundTrip`.

    Args:
        keys: keys of the images to round-trip.
        quality, gop, slice_axis, channel_dim, device, codec: as the array form.
        meta_keys, meta_key_postfix: meta dicts whose ``affine`` steers plain arrays' slice axis.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        quality: int | None = None,
        gop: int = DEFAULT_GOP,
        slice_axis: int | None = None,
        channel_dim: ChannelDim = "auto",
        device: str = "auto",
        codec: VolumeCodec | None = None,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str | None = DEFAULT_POST_FIX,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, meta_keys, meta_key_postfix, allow_missing_keys)
        self.round_trip = MgpuRoundTrip(quality, gop, slice_axis, channel_dim, device, codec)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, _, meta in self._meta_items(d):
            affine = None if hasattr(d[key], "meta") or not isinstance(meta, Mapping) else meta.get("affine")
            d[key] = self.round_trip(d[key], affine=affine)
        return d


CompressToMgpuD = CompressToMgpuDict = CompressToMgpud
DecompressMgpuD = DecompressMgpuDict = DecompressMgpud
MgpuRoundTripD = MgpuRoundTripDict = MgpuRoundTripd

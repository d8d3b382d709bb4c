"""MONAI ``ImageReader`` for ``.mgpu`` streams, so ``LoadImage``/``LoadImaged`` load compressed scans.

::

    from monai.transforms import LoadImaged
    import medgpu

    load = LoadImaged(keys="image", reader=medgpu.MgpuReader)                      # whole volume
    load = LoadImaged(keys="image", reader=medgpu.MgpuReader, slice_range=(10, 20))  # only the GoPs needed

The array is spatial first and holds the values MONAI's own readers give for the source
file: NIfTI ``scl_slope``/``scl_inter`` applied (float64, as nibabel) and DICOM Rescale
Slope/Intercept applied (per slice when it varies; float32, where ``PydicomReader`` gives
float32 or, under numpy 2, float64 for the same values; RT Dose Grid Scaling is applied too,
which ``PydicomReader`` does not), the stored dtype when there is no scaling (``LoadImage``
casts to its ``dtype``, float32 by default). A single DICOM image comes back 2-D, as
``PydicomReader`` gives it. The meta
dict holds ``affine``/``original_affine`` (the source file's affine, shifted to the first slice
for a slice range), ``spatial_shape``, ``original_channel_dim`` (nan: no channel; -1 for 4-D+
volumes), ``space`` ("RAS"), ``spacing`` and ``mgpu_*`` stream facts; for a NIfTI source also
the header fields of ``NibabelReader`` (``pixdim``, ``dim``, ``qform_code``, ...) as stored:
where pixdim and the sform disagree, MONAI's ``correct_nifti_header_if_necessary`` rewrites
pixdim or the affine, and medgpu does not (see :mod:`medgpu.io.nifti`). This module imports MONAI.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.data.image_reader import ImageReader
from monai.data.utils import is_supported_format
from monai.utils import ensure_tuple

from medgpu.convert import CodecCache, volume_meta
from medgpu.errors import InputError, OptionError

if TYPE_CHECKING:  # pragma: no cover
    from medgpu.bitstream.container import StreamHeader
    from medgpu.codec.registry import VolumeCodec

__all__ = ["MgpuImage", "MgpuReader", "register_mgpu_reader"]

SUFFIXES = ("mgpu",)


@dataclass(frozen=True)
class MgpuImage:
    """What :meth:`MgpuReader.read` returns: a checked stream header, not yet decoded."""

    path: Path
    header: StreamHeader
    slice_range: tuple[int, int] | None = None


def _check_range(slice_range: Any) -> tuple[int, int] | None:
    if slice_range is None:
        return None
    try:
        start, stop = (int(v) for v in slice_range)
    except (TypeError, ValueError):
        raise OptionError(f"slice_range must be (start, stop), got {slice_range!r}") from None
    return start, stop


def _single_dicom_image(volume: Any, header: StreamHeader) -> bool:
    """A stream of one DICOM image (one single-frame file, or a series or multi-frame file of
    one frame): MONAI's ``PydicomReader`` returns it as a 2-D array, not X x Y x 1."""
    shape = tuple(int(n) for n in header.shape)
    return isinstance(volume.header.get("dicom"), dict) and len(shape) == 3 and shape[2] == 1


def _num_slices(header: StreamHeader) -> int:
    axis = int(header.slice_axis)
    return int(header.shape[axis]) if axis < len(header.shape) else 1  # 2-D: one virtual slice


class MgpuReader(ImageReader):
    """Read ``.mgpu`` streams with :mod:`medgpu.api` (a MONAI ``ImageReader``).

    Args:
        channel_dim: ``original_channel_dim`` to report; None: nan ("no channel") for
            2-D/3-D volumes and -1 for 4-D+ ones (like MONAI's nibabel reader).
        slice_range: ``(start, stop)`` along the stream's slice axis: decode only the
            GoPs that cover it (``api.decode_slices``); None: the whole volume.
        device: "auto", "cpu" or "cuda[:N]" for the codec.
        codec: a loaded codec to decode with (default: the one named in each stream,
            loaded once per reader and kept).
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        slice_range: tuple[int, int] | None = None,
        device: str = "auto",
        codec: VolumeCodec | None = None,
    ) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.slice_range = _check_range(slice_range)
        self._codecs = CodecCache(codec, device)

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True when every name ends with ``.mgpu``."""
        return is_supported_format(filename, SUFFIXES)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> MgpuImage | list[MgpuImage]:
        """Open the stream(s) and check their headers; ``slice_range=`` overrides the reader's."""
        from medgpu.api import read_header

        unknown = set(kwargs) - {"slice_range"}
        if unknown:
            raise TypeError(f"MgpuReader.read() got unexpected options {sorted(unknown)}")
        rng = _check_range(kwargs["slice_range"]) if "slice_range" in kwargs else self.slice_range
        images = []
        for name in ensure_tuple(data):
            path = Path(name)
            if not path.is_file():
                raise InputError(f"no such file: {path}")
            images.append(MgpuImage(path, read_header(path), rng))
        return images if len(images) > 1 else images[0]

    def get_data(self, img: MgpuImage | Sequence[MgpuImage]) -> tuple[np.ndarray, dict]:
        """Decode and return ``(array, meta)``; several streams are stacked on a new first
        axis (``original_channel_dim`` 0), as MONAI's readers do."""
        from medgpu.convert import decompress

        arrays, metas = [], []
        for image in ensure_tuple(img):
            codec = self._codecs.for_stream(image.path)
            volume = decompress(image.path, slice_range=image.slice_range,
                                device=self._codecs.resolved_device(), codec=codec)
            header = image.header
            start, stop = image.slice_range or (0, _num_slices(header))
            meta = volume_meta(volume, extra={
                "mgpu_codec_id": header.codec_id,
                "mgpu_quality": int(header.quality),
                "mgpu_shape": np.asarray(header.shape),
                "slice_axis": int(header.slice_axis),
                "slice_range": np.asarray([start, stop]),
            })
            if self.channel_dim is not None:
                meta["original_channel_dim"] = self.channel_dim
            array = volume.real_world_array()
            if _single_dicom_image(volume, header):  # 2-D, as MONAI's DICOM readers give it
                array = array[:, :, 0]
                meta["spatial_shape"] = np.asarray(array.shape)
            arrays.append(array)
            metas.append(meta)
        meta = metas[0]
        for other in metas[1:]:
            if not np.allclose(other["affine"], meta["affine"]):
                raise RuntimeError("affine of all images should be the same for channel-wise stacking")
            if not np.array_equal(other["spatial_shape"], meta["spatial_shape"]):
                raise RuntimeError("spatial_shape of all images should be the same for channel-wise stacking")
        if len(arrays) == 1:
            return arrays[0], meta
        cd = meta["original_channel_dim"]
        if isinstance(cd, (int, np.integer)):  # a real channel axis: concatenate along it
            return np.concatenate(arrays, axis=int(cd)), meta
        meta["original_channel_dim"] = 0
        return np.stack(arrays, axis=0), meta


def register_mgpu_reader() -> None:
    """Add ``MgpuReader`` to MONAI's ``SUPPORTED_READERS`` so ``LoadImage()`` without a
    ``reader`` picks it for ``.mgpu`` files (opt-in: it changes MONAI's global registry)."""
    from monai.transforms.io import array as io_array

    io_array.SUPPORTED_READERS.setdefault("mgpureader", MgpuReader)

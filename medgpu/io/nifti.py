"""NIfTI-1/NIfTI-2 (.nii, .nii.gz) reading through MONAI ``LoadImage`` and writing with nibabel.

Scaling policy: ``load_nifti`` returns the *stored* (raw, unscaled) voxel values in
the stored dtype; ``scl_slope``/``scl_inter`` stay in ``Volume.header`` and
``save_nifti`` writes them back unchanged next to the raw values. The round trip
therefore restores the same stored dtype, the same stored integers and the same
scaling (one cosmetic exception: slope and intercept both NaN, meaning "no
scaling", are written as 1 and 0 by nibabel). Real-world values are
``array * slope + inter`` (``Volume.value_scaling``). MONAI's
``correct_nifti_header_if_necessary`` is skipped so pixdim stays as stored.
The codec never needs to change a header field: it codes stored values.

Header fields written back from ``Volume.header``: every raw field, except the
structural ones that follow from the array and the file: ``sizeof_hdr``, ``magic``,
``datatype``/``bitpix`` (from the array's dtype), ``dim`` (from the array's shape)
and ``vox_offset`` (kept when it is still large enough, otherwise the minimum).
Extensions are restored byte for byte; the byte order of the file is kept. If
``Volume.affine`` no longer matches the header's best affine, the sform is set to it.
"""
from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medgpu.volume import Volume, spacing_from_affine

if TYPE_CHECKING:  # pragma: no cover
    import nibabel

__all__ = [
    "NIFTI_SUFFIXES",
    "is_nifti_path",
    "load_nifti",
    "save_nifti",
    "header_to_dict",
    "header_from_dict",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_HEADER_KEY = "medgpu_nifti_header"
_STRUCTURAL = frozenset({"sizeof_hdr", "magic", "datatype", "bitpix", "dim", "vox_offset"})


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True if the file name ends with .nii or .nii.gz (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a .nii/.nii.gz file through MONAI ``LoadImage`` into a :class:`Volume`.

    The array keeps the stored dtype (MONAI is called with ``dtype=None`` and a
    nibabel reader that returns unscaled values; MONAI's torch round trip widens
    uint16/uint32, which is undone exactly here).
    """
    from monai.transforms import LoadImage
    from monai.utils import convert_data_type

    path = os.fspath(path)
    if not is_nifti_path(path):
        raise ValueError(f"not a NIfTI file name (.nii or .nii.gz): {path}")
    loader = LoadImage(reader=_raw_nibabel_reader(), image_only=False, dtype=None)
    data, meta = loader(path)
    header = _decode_json(meta[_HEADER_KEY])
    stored = np.dtype(header.pop("_stored_dtype"))
    array = convert_data_type(data, np.ndarray)[0]
    if array.dtype != stored:
        array = array.astype(stored)
    affine = np.asarray(convert_data_type(meta["original_affine"], np.ndarray)[0], dtype=np.float64)
    return Volume(
        array=array,
        affine=affine,
        spacing=_spacing(affine, header, array.ndim),
        source_format="nifti",
        header=header,
        path=path,
    )


def save_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write ``volume`` to .nii/.nii.gz atomically (temp file in the same folder, then rename).

    Shape and dtype come from ``volume.array``; header fields, qform/sform and
    their codes, scaling and extensions from ``volume.header`` (see module doc).
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"not a NIfTI file name (.nii or .nii.gz): {path}")
    img = _to_image(volume, nib)
    suffix = ".nii.gz" if str(path).lower().endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def header_to_dict(header: nibabel.nifti1.Nifti1Header) -> dict[str, Any]:
    """Every raw field of a NIfTI-1/2 header as plain JSON values.

    Byte strings become latin-1 text, non-finite floats the strings "nan", "inf",
    "-inf". Added keys: ``nifti_version`` (1 or 2), ``endianness`` ("<" or ">")
    and ``extensions`` (list of {"code": int, "content_b64": str}).
    """
    out: dict[str, Any] = {
        "nifti_version": 2 if int(header["sizeof_hdr"]) == 540 else 1,
        "endianness": header.endianness,
    }
    for key in header.keys():
        out[key] = _to_json_value(header[key])
    out["extensions"] = [
        {"code": int(ext.get_code()), "content_b64": base64.b64encode(_ext_bytes(ext)).decode("ascii")}
        for ext in getattr(header, "extensions", [])
    ]
    return out


def header_from_dict(values: dict[str, Any]) -> nibabel.nifti1.Nifti1Header:
    """Build a nibabel header (NIfTI-1 or -2, same byte order) from :func:`header_to_dict` output.

    Structural fields (``sizeof_hdr``, ``magic``, ``vox_offset``, ``datatype``,
    ``bitpix``) are left to nibabel; ``dim`` is set but the image's shape wins.
    """
    import nibabel as nib
    from nibabel.nifti1 import Nifti1Extension

    cls = nib.Nifti2Header if int(values.get("nifti_version", 1)) == 2 else nib.Nifti1Header
    hdr = cls(endianness=values.get("endianness", "<"))
    names = set(hdr.keys())
    for key, value in values.items():
        if key in names and key not in _STRUCTURAL - {"dim"}:
            hdr[key] = _from_json_value(value, hdr[key])
    for ext in values.get("extensions", []):
        hdr.extensions.append(Nifti1Extension(int(ext["code"]), base64.b64decode(ext["content_b64"])))
    return hdr


def reader_meta(volume: Volume) -> dict[str, Any]:
    """The header fields that MONAI's ``NibabelReader`` puts in its meta dict (numpy values,
    little-endian, no text fields), for a volume read from NIfTI; {} for other volumes.

    ``dim`` and the sform follow the volume's array and affine (a slice range of a stream);
    ``scl_slope``/``scl_inter`` are nan, as nibabel leaves them once the array is scaled
    (:meth:`Volume.real_world_array`).
    """
    if not (volume.source_format == "nifti" or "srow_x" in volume.header):
        return {}
    import nibabel as nib

    header = _to_image(volume, nib).header
    header["scl_slope"] = header["scl_inter"] = np.nan
    header["vox_offset"] = 0  # as in the header of an image nibabel has loaded
    with contextlib.suppress(ValueError):  # already little-endian
        header = header.as_byteswapped("<")
    # text fields are left out, as MONAI's readers do: batches cannot collate byte strings
    return {k: v for k, v in dict(header).items() if not (isinstance(v, np.ndarray) and v.dtype.kind in "SUO")}


# --------------------------------------------------------------------------- helpers


def _raw_nibabel_reader() -> Any:
    """A MONAI ``NibabelReader`` that returns unscaled stored values and the full header.

    It also skips MONAI's ``correct_nifti_header_if_necessary``, which rewrites pixdim
    from the affine (and, for 4D files, puts the translation norm into the time step).
    Defined in a function so that importing this module does not import MONAI.
    """
    import nibabel as nib
    from monai.data import NibabelReader
    from monai.utils import ensure_tuple

    class RawNibabelReader(NibabelReader):
        """NibabelReader variant: raw stored values, untouched header as JSON in the meta dict."""

        def read(self, data: Any, **kwargs: Any) -> Any:
            self.filenames = ensure_tuple(data)
            options = {**self.kwargs, **kwargs}
            images = [nib.load(name, **options) for name in self.filenames]
            for name, image in zip(self.filenames, images):
                if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
                    raise ValueError(f"{name}: {type(image).__name__} is not a NIfTI-1/2 image")
            return images if len(images) > 1 else images[0]

        def _get_array_data(self, img: Any, filename: Any = None) -> np.ndarray:
            proxy = img.dataobj
            raw = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
            raw = np.asarray(raw)
            return raw.astype(raw.dtype.newbyteorder("="), copy=False)

        def _get_meta_dict(self, img: Any) -> dict:
            meta = super()._get_meta_dict(img)
            header = header_to_dict(_stored_header(img))
            header["_stored_dtype"] = img.header.get_data_dtype().newbyteorder("=").str
            meta[_HEADER_KEY] = _encode_json(header)
            return meta

    return RawNibabelReader(as_closest_canonical=False, squeeze_non_spatial_dims=False, mmap=False)


def _stored_header(img: Any) -> Any:
    """The header exactly as stored in the file.

    nibabel moves ``scl_slope``, ``scl_inter`` and ``vox_offset`` out of
    ``img.header`` (into the data proxy) on load, so the header is read again from
    the file; for in-memory images the proxy's values are put back instead.
    """
    holder = img.file_map.get("image") if hasattr(img, "file_map") else None
    if holder is not None and (holder.filename is not None or holder.fileobj is not None):
        try:
            with holder.get_prepare_fileobj("rb") as fileobj:
                return type(img.header).from_fileobj(fileobj, check=False)
        except (OSError, ValueError):
            pass
    header = img.header.copy()
    proxy = img.dataobj
    if hasattr(proxy, "slope") and hasattr(proxy, "inter"):
        header["scl_slope"] = proxy.slope
        header["scl_inter"] = proxy.inter
    if hasattr(proxy, "offset"):
        header["vox_offset"] = proxy.offset
    return header


def _to_image(volume: Volume, nib: Any) -> Any:
    array = np.asarray(volume.array)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot write dtype {array.dtype} to NIfTI")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    array = array.astype(array.dtype.newbyteorder("="), copy=False)
    values = dict(volume.header) if volume.source_format == "nifti" or "srow_x" in volume.header else {}
    if not values:
        img_cls = nib.Nifti1Image
        img = img_cls(array, volume.affine, dtype=array.dtype)
        _set_extra_zooms(img.header, volume.spacing, array.ndim)
        return img
    hdr = header_from_dict(values)
    img_cls = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    hdr.set_data_dtype(array.dtype.newbyteorder(hdr.endianness))
    img = img_cls(array, None, header=hdr)
    out = img.header
    if not np.allclose(out.get_best_affine(), volume.affine, rtol=1e-6, atol=1e-5):
        sform_code = int(out["sform_code"]) or 2
        out.set_sform(volume.affine, code=sform_code)
    # Image construction resets the scaling; restore it so raw values are written unchanged.
    slope = _float_or_nan(values.get("scl_slope"))
    inter = _float_or_nan(values.get("scl_inter"))
    if not (math.isnan(slope) and math.isnan(inter)):
        out["scl_slope"] = slope
        out["scl_inter"] = inter
    offset = _float_or_nan(values.get("vox_offset"))
    if math.isfinite(offset) and offset >= _min_offset(out):
        out.set_data_offset(int(offset))
    return img


def _min_offset(hdr: Any) -> int:
    size = int(hdr.single_vox_offset) if hasattr(hdr, "single_vox_offset") else 352
    return size + sum(int(e.get_sizeondisk()) for e in hdr.extensions)


def _set_extra_zooms(hdr: Any, spacing: tuple[float, ...], ndim: int) -> None:
    if ndim > 3 and len(spacing) == ndim:
        zooms = list(hdr.get_zooms())
        zooms[3:ndim] = [float(s) for s in spacing[3:ndim]]
        hdr.set_zooms(zooms)


def _spacing(affine: np.ndarray, header: dict[str, Any], ndim: int) -> tuple[float, ...]:
    spatial = spacing_from_affine(affine, min(ndim, 3))
    pixdim = header.get("pixdim", [])
    extra = []
    for axis in range(len(spatial), ndim):
        value = _float_or_nan(pixdim[axis + 1]) if axis + 1 < len(pixdim) else math.nan
        extra.append(value if math.isfinite(value) and value > 0 else 1.0)
    return spatial + tuple(extra)


def _ext_bytes(ext: Any) -> bytes:
    content = getattr(ext, "content", None)
    if isinstance(content, (bytes, bytearray)):
        return bytes(content)
    raw = ext.get_content()
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


def _to_json_value(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind == "S":
        return arr.item().decode("latin-1") if arr.ndim == 0 else [v.decode("latin-1") for v in arr.tolist()]
    if arr.ndim == 0:
        return _scalar_to_json(arr.item())
    return [_scalar_to_json(v) for v in arr.tolist()]


def _scalar_to_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _from_json_value(value: Any, template: Any) -> Any:
    template = np.asarray(template)
    if template.dtype.kind == "S":
        return value.encode("latin-1") if isinstance(value, str) else value
    if isinstance(value, list):
        return np.array([float(v) if isinstance(v, str) else v for v in value], dtype=template.dtype)
    if isinstance(value, str):
        return float(value)
    return value


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _encode_json(values: dict[str, Any]) -> str:
    return json.dumps(values, allow_nan=False)


def _decode_json(text: Any) -> dict[str, Any]:
    return json.loads(str(text))

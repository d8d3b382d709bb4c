"""Python API: compress a volume to ``.mgpu`` (+ ``.mgpu.json``), decode it back, describe it.

Heavy modules (torch, the codec, MONAI, nibabel) are imported inside the functions, so
importing this module is cheap.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medgpu.bitstream.container import ContainerReader, StreamHeader, atomic_paths, write_container
from medgpu.bitstream.sidecar import build_sidecar, read_sidecar, sidecar_path, write_sidecar
from medgpu.errors import (
    CorruptStreamError,
    DeviceError,
    FormatError,
    InputError,
    MedgpuError,
    OptionError,
    OutputError,
    WeightsMismatchError,
)
from medgpu.framing import DEFAULT_GOP, FramePlan, gops_for_slices, merge_slices, plan_for_volume, split_gops
from medgpu.intensity import IntensityMapping, decode_nonfinite, encode_nonfinite, restore_nonfinite
from medgpu.adapt.config import AdaptConfig
from medgpu.metrics import bits_per_voxel, data_range, psnr, psnr_per_slice
from medgpu.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from medgpu.codec.registry import VolumeCodec

DEFAULT_QUALITY = 63
"""Default quality index (0..63): the highest anchor. The shipped weights top out well below
classical near-lossless fidelity (docs/evaluation.md), so the default spends bits on fidelity."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called once per GoP; stage is "encoding",
"verifying" (compress decodes what it wrote) or "decoding". With adaptation, stage "adapting"
is also called once per update step (epochs x patch-GoPs of every GoP together)."""

PathLike = str | os.PathLike[str]
_NIFTI_SUFFIXES = (".nii.gz", ".nii")

__all__ = [
    "DEFAULT_GOP",
    "DEFAULT_QUALITY",
    "compress",
    "decode_slices",
    "decompress",
    "default_dicom_dir",
    "default_nifti_path",
    "dicom_derivation",
    "default_stream_path",
    "info",
    "read_header",
    "resolve_device",
]


# ------------------------------------------------------------------------------ paths


def _strip_suffix(path: Path, suffixes: Sequence[str]) -> str:
    name = path.name
    for suffix in suffixes:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def default_stream_path(src: PathLike) -> Path:
    """``ct.nii.gz`` -> ``ct.mgpu`` beside it (a DICOM folder ``ct/`` -> ``ct.mgpu``)."""
    p = Path(src)
    return p.with_name(_strip_suffix(p, (*_NIFTI_SUFFIXES, ".dcm")) + ".mgpu")


def default_nifti_path(stream: PathLike) -> Path:
    """``ct.mgpu`` -> ``ct.nii.gz`` beside it."""
    p = Path(stream)
    return p.with_name(_strip_suffix(p, (".mgpu",)) + ".nii.gz")


def default_dicom_dir(stream: PathLike) -> Path:
    """``ct.mgpu`` -> the folder ``ct_dicom`` beside it."""
    p = Path(stream)
    return p.with_name(_strip_suffix(p, (".mgpu",)) + "_dicom")


def _check_outputs(paths: Sequence[Path], overwrite: bool, make_dirs: bool = False) -> None:
    for p in paths:
        if p.is_dir():
            raise OutputError(f"output is a folder: {p}")
        if p.exists() and not overwrite:
            raise OutputError(f"output exists: {p} (use --force / overwrite=True to replace it)")
        if not make_dirs and not p.parent.is_dir():
            raise OutputError(f"output folder does not exist: {p.parent}")


# ------------------------------------------------------------------------------ options


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when available else "cpu"; checks that "cuda[:N]" is available."""
    if not isinstance(device, str):
        raise OptionError(f"--device must be auto, cpu or cuda, got {device!r}")
    name = device.strip().lower()
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise OptionError(f"--device must be auto, cpu or cuda, got {device!r}")
    if name == "cpu":
        return name
    import torch

    available = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise DeviceError(f"--device {name} requested but CUDA is not available (use --device cpu)")
    if ":" in name and int(name[5:]) >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_quality(quality: Any, codec: VolumeCodec) -> int:
    top = int(codec.num_qualities) - 1
    if not _is_int(quality) or not 0 <= quality <= top:
        raise OptionError(f"--quality must be an integer in 0..{top}, got {quality!r}")
    return int(quality)


def _check_gop(gop: Any) -> int:
    if not _is_int(gop) or gop < 1:
        raise OptionError(f"--gop must be a positive number of slices, got {gop!r}")
    return int(gop)


# ------------------------------------------------------------------------------ codec


def _load_codec(name: str | None, device: str) -> VolumeCodec:
    from medgpu.codec import available_codecs, load_codec

    if name is not None and name not in available_codecs():
        raise FormatError(
            f"the stream needs codec '{name}', which this medgpu does not have "
            f"(available: {', '.join(available_codecs())})"
        )
    try:
        return load_codec(name, device=device)
    except FileNotFoundError as exc:
        raise InputError(f"codec weights are not installed: {exc.filename or exc}") from None


def _check_weights(codec: VolumeCodec, header: StreamHeader) -> None:
    if codec.codec_id != header.codec_id or bytes(codec.weights_hash) != header.weights_hash:
        raise WeightsMismatchError(
            f"stream was coded with codec '{header.codec_id}' weights sha256 {header.weights_hash.hex()[:16]}…, "
            f"but the loaded codec is '{codec.codec_id}' weights {bytes(codec.weights_hash).hex()[:16]}…: "
            f"decode it with the medgpu version (weights) that wrote it"
        )


# ------------------------------------------------------------------------------ volumes


def _read_volume(src: PathLike | Volume) -> Volume:
    if isinstance(src, Volume):
        return src
    path = Path(src)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    from medgpu.io import load_volume

    try:
        volume = load_volume(path)
    except MedgpuError:
        raise
    except Exception as exc:  # nibabel, MONAI and pydicom raise many kinds; the user needs one line
        lines = str(exc).strip().splitlines()  # MONAI appends whole tracebacks: keep the first line
        reason = lines[0][:300] if lines else type(exc).__name__
        raise InputError(f"cannot read {path.name} as an image: {reason}") from None
    if volume.array.size == 0:
        raise InputError(f"{path.name} holds no voxels")
    if volume.array.dtype.kind not in "biuf":
        raise InputError(f"{path.name} has voxel type {volume.array.dtype}, which medgpu cannot code")
    return volume


def _volume_meta(volume: Volume) -> dict[str, Any]:
    return {
        "affine": np.asarray(volume.affine, dtype=np.float64).tolist(),
        "spacing": [float(s) for s in volume.spacing],
        "source_format": volume.source_format,
        "source_name": Path(volume.path).name if volume.path else None,
        "header": volume.header,
    }


def _plan_of(header: StreamHeader) -> FramePlan:
    try:
        plan = FramePlan.from_dict(header.plan)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"stream has an invalid GoP plan: {exc}") from None
    if plan.shape != header.shape:
        raise FormatError("stream has an invalid GoP plan: shape differs from the header's")
    return plan


def _mapping_of(header: StreamHeader) -> IntensityMapping:
    try:
        return IntensityMapping.from_dict(header.intensity)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"stream has an invalid intensity mapping: {exc}") from None


# ------------------------------------------------------------------------------ coding


def _encode_packets(gops: Sequence[np.ndarray], mapping: IntensityMapping, codec: VolumeCodec, quality: int,
                    device: str, progress: Progress | None, adapt: AdaptConfig | None = None,
                    adapt_reports: list | None = None) -> Iterator[bytes]:
    """Yield one packet per GoP; with ``adapt``, the encoder's adapters are first
    optimised on each GoP (the decoder never changes)."""
    import torch

    if progress:
        progress("encoding", 0, len(gops))
    adapted = None
    on_step = _step_progress(progress, codec, gops, adapt) if adapt is not None and progress else None
    for i, frames in enumerate(gops):
        x = torch.from_numpy(mapping.forward(frames)).unsqueeze(1).to(device)
        if adapt is None:
            yield codec.encode_gop(x, quality)
        else:
            from medgpu.adapt.online import encode_adapted_gop

            payload, adapted, rep = encode_adapted_gop(codec, x, quality, adapt, adapted if adapt.carry_over else None,
                                                       on_step=on_step)
            if adapt_reports is not None:
                adapt_reports.append(rep)
            yield payload
        if progress:
            progress("encoding", i + 1, len(gops))


def _step_progress(progress: Progress, codec: VolumeCodec, gops: Sequence[np.ndarray],
                   config: AdaptConfig) -> Callable[[], None]:
    """An ``on_step`` for the update that advances the "adapting" stage over all GoPs' steps."""
    from medgpu.adapt.online import planned_steps

    total = sum(planned_steps(codec.intra, codec.inter, g.shape, config) for g in gops)
    if total:
        progress("adapting", 0, total)
    done = itertools.count(1)
    return lambda: progress("adapting", next(done), total)


def _decode_gops(reader: ContainerReader, indices: Sequence[int], codec: VolumeCodec | None, device: str,
                 progress: Progress | None, stage: str) -> dict[int, np.ndarray]:
    """Read (CRC-checked) the packets ``indices``, then decode them to original-dtype GoPs."""
    header = reader.header
    plan, mapping = _plan_of(header), _mapping_of(header)
    if len(reader) != plan.n_gops:
        raise FormatError(f"stream has {len(reader)} packets but its plan needs {plan.n_gops}")
    payloads = {i: reader.read_packet(i) for i in indices}  # integrity first, then the model
    codec = codec if codec is not None else _load_codec(header.codec_id, device)
    _check_weights(codec, header)
    h, w = plan.frame_shape
    table = plan.gops
    codes = None
    if "nonfinite_codes" in header.intensity:  # voxel offsets of the GoPs in the flat mask
        starts = np.cumsum([0] + [g.length for g in table]) * h * w
        try:
            codes = decode_nonfinite(header.intensity["nonfinite_codes"], int(starts[-1]))
        except Exception:
            raise CorruptStreamError("corrupt stream header: bad non-finite voxel mask") from None
    out: dict[int, np.ndarray] = {}
    if progress:
        progress(stage, 0, len(indices))
    for n, i in enumerate(indices):
        try:
            frames = codec.decode_gop(payloads[i], table[i].length, h, w, header.quality)
        except MedgpuError:
            raise
        except Exception as exc:  # CRC passed, so this is a stream/codec inconsistency
            raise FormatError(f"cannot decode packet {i}: {exc}") from None
        out[i] = mapping.inverse(frames[:, 0].detach().cpu().numpy())
        if codes is not None:
            restore_nonfinite(out[i], codes[starts[i] : starts[i + 1]])
        if progress:
            progress(stage, n + 1, len(indices))
    return out


def _decode_all(reader: ContainerReader, codec: VolumeCodec | None, device: str, progress: Progress | None,
                stage: str) -> np.ndarray:
    plan = _plan_of(reader.header)
    gops = _decode_gops(reader, range(plan.n_gops), codec, device, progress, stage)
    return merge_slices(gops, plan, 0, plan.n_slices, dtype=np.dtype(reader.header.dtype))


# ------------------------------------------------------------------------------ public API


def compress(
    src: PathLike | Volume,
    out: PathLike | None = None,
    *,
    quality: int | None = None,
    gop: int = DEFAULT_GOP,
    slice_axis: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = False,
    codec: VolumeCodec | None = None,
    adapt: AdaptConfig | bool | None = None,
    make_dirs: bool = False,
) -> dict[str, Any]:
    """Compress ``src`` (NIfTI, DICOM file or series folder, or a :class:`Volume`) to ``out``.

    ``out`` (.mgpu) and its ``.mgpu.json`` sidecar are written atomically. The returned report (also in the sidecar) comes from
    decoding the written stream: ``bytes``, ``bits_per_voxel`` (real file size), ``psnr``
    (whole volume, over the original data range), ``psnr_per_slice`` (along the slice axis),
    ``encode_seconds``, ``decode_seconds``, ``quality``, ``codec_id`` and paths.
    ``codec`` overrides the shipped codec (tests use random weights). ``adapt`` turns on
    content-adaptive encoding (an :class:`medgpu.adapt.AdaptConfig`, or ``True`` for the
    defaults); its settings, time and, per GoP, the real rate-distortion cost of the stock and
    the adapted stream (the cheaper one is kept) go into the report. ``make_dirs`` creates
    missing folders of ``out`` just before the stream is written (and removes them again, if
    still empty, when the call fails); otherwise a missing folder is an error.
    """
    quality = DEFAULT_QUALITY if quality is None else quality
    gop = _check_gop(gop)
    if slice_axis is not None and not _is_int(slice_axis):
        raise OptionError(f"--slice-axis must be an integer, got {slice_axis!r}")
    device = resolve_device(device)
    if out is None:
        if isinstance(src, Volume) and not src.path:
            raise OptionError("an output path is needed to compress an in-memory volume")
        out = default_stream_path(src.path if isinstance(src, Volume) else src)  # type: ignore[arg-type]
    if Path(out).suffix.lower() != ".mgpu":
        raise OptionError(f"the output must be a .mgpu file, got {Path(out).name}")
    stream, side = Path(out), sidecar_path(out)
    _check_outputs([stream, side], overwrite, make_dirs)
    volume = _read_volume(src)
    try:
        plan = plan_for_volume(volume, slice_axis=slice_axis, gop=gop)
    except ValueError as exc:
        raise OptionError(f"--slice-axis: {exc}") from None
    codec = codec if codec is not None else _load_codec(None, device)
    quality = _check_quality(quality, codec)
    mapping = IntensityMapping.fit(volume.array)
    gops = split_gops(volume.array, plan)
    intensity = mapping.to_dict()
    if mapping.nan_count or mapping.posinf_count or mapping.neginf_count:
        intensity["nonfinite_codes"] = encode_nonfinite(gops)  # kept exactly, beside the lossy values
    header = StreamHeader(
        codec_id=codec.codec_id,
        weights_hash=bytes(codec.weights_hash),
        quality=quality,
        shape=tuple(int(s) for s in volume.shape),
        dtype=np.dtype(volume.dtype).newbyteorder("=").str,
        slice_axis=plan.slice_axis,
        plan=plan.to_dict(),
        intensity=intensity,
        volume=_volume_meta(volume),
    )
    if adapt is True:
        adapt = AdaptConfig()
    adapt = adapt or None
    if adapt is not None:
        adapt.validate()
    adapt_reports: list[dict] = []
    with atomic_paths(stream, side, make_parents=make_dirs) as (tmp_stream, tmp_side):
        t0 = time.perf_counter()
        packets = _encode_packets(gops, mapping, codec, quality, device, progress, adapt, adapt_reports)
        size = write_container(tmp_stream, header, packets)
        t1 = time.perf_counter()
        with ContainerReader(tmp_stream) as reader:
            decoded = _decode_all(reader, codec, device, progress, "verifying")
        t2 = time.perf_counter()
        report = _report(volume.array, decoded, plan, size, header, t1 - t0, t2 - t1)
        report.update(stream=str(stream), sidecar=str(side))
        report["adaptation"] = _adaptation_summary(adapt, adapt_reports)
        report["nonfinite_voxels"] = {"nan": mapping.nan_count, "posinf": mapping.posinf_count,
                                      "neginf": mapping.neginf_count}
        write_sidecar(tmp_side, build_sidecar(header, report, stream.name))
    return report


def _adaptation_summary(adapt: AdaptConfig | None, reports: list[dict]) -> dict[str, Any]:
    """Settings, time and, per GoP, the real RD cost (lambda * MSE + bits per pixel of the coded
    GoP) with the stock and the adapted encoder, and which stream was kept."""
    if adapt is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "settings": adapt.to_dict(),
        "seconds": sum(r.get("seconds", 0.0) for r in reports),
        "trainable_parameters": reports[0].get("trainable_parameters") if reports else 0,
        "per_gop": [{k: r.get(k) for k in ("rd_cost_before", "rd_cost_after", "used", "seconds", "update_seconds",
                                           "epochs", "patches")}
                    for r in reports],
    }


def _report(original: np.ndarray, decoded: np.ndarray, plan: FramePlan, size: int, header: StreamHeader,
            encode_s: float, decode_s: float) -> dict[str, Any]:
    per_slice = psnr_per_slice(original, decoded, plan.slice_axis) if original.ndim >= 3 else [psnr(original, decoded)]
    return {
        "bytes": int(size),
        "voxels": int(original.size),
        "bits_per_voxel": bits_per_voxel(size, original.size),
        "compression_ratio": original.nbytes / size if size else math.inf,
        "psnr": psnr(original, decoded),
        "psnr_per_slice": per_slice,
        "psnr_peak": data_range(original),  # PSNR is over the original data range (max - min)
        "encode_seconds": encode_s,
        "decode_seconds": decode_s,
        "quality": header.quality,
        "codec_id": header.codec_id,
        "gop": plan.gop,
        "num_gops": plan.n_gops,
        "slice_axis": plan.slice_axis,
    }


def _volume_from(header: StreamHeader, array: np.ndarray) -> Volume:
    meta = header.volume
    spacing = meta.get("spacing") or ()
    try:
        return Volume(
            array=array,
            affine=np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64),
            spacing=tuple(spacing) if len(spacing) == array.ndim else (),
            source_format=str(meta.get("source_format", "array")),
            header=dict(meta.get("header") or {}),
        )
    except (TypeError, ValueError) as exc:
        raise FormatError(f"stream has invalid volume metadata: {exc}") from None


OUTPUT_FORMATS = ("nifti", "dicom")

LOSSY_METHOD = "MEDGPU"
"""Lossy Image Compression Method (0028,2114) written into decoded DICOM. PS3.3 C.7.6.1.1.5
lists *Defined Terms* (ISO_10918_1, ISO_15444_1, ...), which may be extended; a CS value
holds 16 characters at most, too few for codec and quality, so the method stays the stable
"MEDGPU" and the codec id, quality and weights go into Derivation Description (0008,2111)."""


def _output_format(to: Any, out: PathLike | None) -> str:
    """"nifti" or "dicom" from ``to`` and the output name (see :func:`decompress`)."""
    target = Path(out) if out is not None else None
    nifti_name = target is not None and target.name.lower().endswith(_NIFTI_SUFFIXES)
    if to is not None:
        name = to.strip().lower() if isinstance(to, str) else None
        if name not in OUTPUT_FORMATS:
            raise OptionError(f"--to must be nifti or dicom, got {to!r}")
        to = name
    elif target is None or nifti_name:
        to = "nifti"
    elif target.is_dir() or str(out).endswith(("/", os.sep)):
        to = "dicom"
    else:
        raise OptionError(f"output must end with .nii or .nii.gz (NIfTI) or be a folder (DICOM series), got "
                          f"{target.name}; --to nifti|dicom says which")
    if to == "nifti" and target is not None and not nifti_name:
        raise OptionError(f"output must end with .nii or .nii.gz, got {target.name}")
    if to == "dicom":
        if target is None:
            raise OptionError("--to dicom needs an output folder (-o DIR)")
        if nifti_name:
            raise OptionError(f"--to dicom writes a folder of DICOM files, not {target.name}")
    return to


def _check_dicom_dir(target: Path, overwrite: bool) -> None:
    """An absent or empty folder; with ``overwrite``, also a folder of .dcm files only."""
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"output exists and is not a folder: {target}")
    entries = list(target.iterdir())
    if not entries:
        return
    if not overwrite:
        raise OutputError(f"output folder is not empty: {target} (use --force / overwrite=True to replace "
                          f"a DICOM series written there before)")
    if any(p.is_symlink() or not p.is_file() or not p.name.lower().endswith(".dcm") for p in entries):
        raise OutputError(f"output folder {target} holds more than .dcm files; refusing to replace it")


def dicom_derivation(header: StreamHeader, stream_bytes: int) -> dict[str, Any]:
    """How a decoded stream is labelled in DICOM (PS3.3 C.7.6.1.1.5 and C.12.4.1.1).

    ``lossy_ratio``: original voxel bytes / stream bytes (the report's ``compression_ratio``);
    ``lossy_method``: :data:`LOSSY_METHOD`; ``description``: Derivation Description text
    with the codec id, quality, weights hash and ratio.
    """
    from medgpu import __version__

    original = math.prod(header.shape) * np.dtype(header.dtype).itemsize
    ratio = original / stream_bytes if stream_bytes > 0 else 1.0
    description = (f"Lossy compressed by medgpu {__version__}: codec {header.codec_id}, quality {header.quality}, "
                   f"weights sha256 {header.weights_hash.hex()[:16]}, compression ratio {ratio:.4g}:1")
    return {"lossy_ratio": ratio, "lossy_method": LOSSY_METHOD, "description": description}


def _code_item(value: str, meaning: str) -> dict[str, Any]:
    return {"00080100": {"vr": "SH", "Value": [value]}, "00080102": {"vr": "SH", "Value": ["DCM"]},
            "00080104": {"vr": "LO", "Value": [meaning]}}


def _items(element: Any) -> list[Any]:
    return list(element.get("Value") or []) if isinstance(element, Mapping) else []


def _derived_volume(volume: Volume, description: str) -> Volume:
    """``volume`` whose DICOM instances say they are lossy-compressed derivatives of the source.

    Per PS3.3 C.7.6.1.1.5: Image Type value 1 DERIVED; Derivation Description (appended to any
    existing one); Derivation Code Sequence + (DCM 113040 "Lossy Compression"); Source Image
    Sequence + the source instance (purpose DCM 121320 "Uncompressed predecessor"). A volume
    without a DICOM header (Secondary Capture output) is returned unchanged.
    """
    dicom = volume.header.get("dicom")
    if not isinstance(dicom, dict) or not isinstance(dicom.get("instances"), list):
        return volume
    from medgpu.io import instance_json

    instances = []
    for i in range(len(dicom["instances"])):
        ds = instance_json(volume.header, i)
        image_type = [str(v) for v in _items(ds.get("00080008"))]
        if image_type:
            ds["00080008"] = {"vr": "CS", "Value": ["DERIVED", *image_type[1:]]}
        previous = [str(v) for v in _items(ds.get("00082111")) if v]
        ds["00082111"] = {"vr": "ST", "Value": ["; ".join([*previous, description])[-1024:]]}
        codes = _items(ds.get("00089215"))
        ds["00089215"] = {"vr": "SQ", "Value": [*codes, _code_item("113040", "Lossy Compression")]}
        sop_class, sop_uid = _items(ds.get("00080016")), _items(ds.get("00080018"))
        if sop_class and sop_uid:
            source = {"00081150": {"vr": "UI", "Value": [sop_class[0]]},
                      "00081155": {"vr": "UI", "Value": [sop_uid[0]]},
                      "0040A170": {"vr": "SQ", "Value": [_code_item("121320", "Uncompressed predecessor")]}}
            ds["00082112"] = {"vr": "SQ", "Value": [*_items(ds.get("00082112")), source]}
        instances.append(ds)
    header = {**volume.header, "dicom": {**dicom, "shared": {}, "instances": instances}}
    return Volume(volume.array, volume.affine, volume.spacing, volume.source_format, header, volume.path)


def _write_dicom(volume: Volume, target: Path, header: StreamHeader, stream_bytes: int, overwrite: bool) -> list[Path]:
    """Write the decoded ``volume`` as a new, lossy-labelled DICOM series into ``target``.

    Atomic: with ``overwrite`` an existing series folder is swapped out only once the new one
    is complete.
    """
    import shutil
    import uuid

    from medgpu.io import save_dicom

    label = dicom_derivation(header, stream_bytes)
    derived = _derived_volume(volume, label.pop("description"))
    replace = target.is_dir() and any(target.iterdir())
    dest = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.new") if replace else target
    try:
        files = save_dicom(derived, dest, **label)
    except FileExistsError as exc:
        raise OutputError(str(exc)) from None
    except ValueError as exc:
        raise OptionError(f"cannot write this volume as DICOM: {exc}") from None
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    if replace:
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        try:
            os.replace(target, old)
        except OSError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise OutputError(f"cannot replace {target}: {exc.strerror or exc}") from None
        try:
            os.replace(dest, target)
        except OSError as exc:  # put the old series back: the caller keeps what it had
            shutil.rmtree(dest, ignore_errors=True)
            try:
                os.replace(old, target)
            except OSError:
                raise OutputError(f"cannot replace {target}: {exc.strerror or exc}; the previous series "
                                  f"is in {old}") from None
            raise OutputError(f"cannot replace {target}: {exc.strerror or exc}") from None
        shutil.rmtree(old, ignore_errors=True)
        files = [target / f.name for f in files]
    return files


def decompress(
    src: PathLike,
    out: PathLike | None = None,
    *,
    to: str | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = False,
    codec: VolumeCodec | None = None,
) -> Volume:
    """Decode a ``.mgpu`` stream to a :class:`Volume`; also write it when ``out`` is given.

    ``to`` picks the output: ``"nifti"`` (``out`` ends with .nii/.nii.gz) or ``"dicom"``
    (``out`` is a folder, created; it must not exist or be empty -- with ``overwrite`` a
    folder holding only .dcm files is replaced). Default: NIfTI, whatever the source, unless
    ``out`` is an existing folder or ends with a path separator. DICOM output is a new series
    (new Series/SOP Instance UIDs) with the source's patient, study, frame of reference,
    geometry, Bits and Pixel Representation (a NIfTI source becomes Secondary Capture), marked
    lossy: Lossy Image Compression "01", Ratio = original voxel bytes / stream bytes, Method
    "MEDGPU" (:data:`LOSSY_METHOD`), Image Type DERIVED, Derivation Description with codec id,
    quality and weights hash (:func:`dicom_derivation`). The returned volume's ``path`` is
    the file or folder written.

    Every packet's CRC is checked before the codec is loaded; a stream coded with other
    weights is refused (:class:`~medgpu.errors.WeightsMismatchError`).
    """
    fmt = _output_format(to, out)
    target = Path(out) if out is not None else None
    if target is not None:
        if fmt == "nifti":
            _check_outputs([target], overwrite)
        else:
            _check_dicom_dir(target, overwrite)
    with ContainerReader(src) as reader:
        array = _decode_all(reader, codec, resolve_device(device), progress, "decoding")
        header, size = reader.header, reader.size
    volume = _volume_from(header, array)
    if target is None:
        return volume
    if fmt == "dicom":
        _write_dicom(volume, target, header, size, overwrite)
    else:
        from medgpu.io import save_volume

        try:
            save_volume(volume, target, fmt="nifti")
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    volume.path = str(target)
    return volume


def decode_slices(
    src: PathLike,
    start: int,
    stop: int,
    *,
    device: str = "auto",
    codec: VolumeCodec | None = None,
) -> np.ndarray:
    """Slices ``start:stop`` along the stream's slice axis, in the original dtype.

    Reads and decodes only the GoPs that cover the range. The result has the volume's
    shape with the slice axis cut to ``stop - start``.
    """
    with ContainerReader(src) as reader:
        plan = _plan_of(reader.header)
        if not (_is_int(start) and _is_int(stop) and 0 <= start < stop <= plan.n_slices):
            raise OptionError(f"slice range {start}:{stop} is not inside 0:{plan.n_slices}")
        indices = gops_for_slices(plan, start, stop)
        gops = _decode_gops(reader, indices, codec, resolve_device(device), None, "decoding")
        return merge_slices(gops, plan, start, stop, dtype=np.dtype(reader.header.dtype))


def read_header(path: PathLike) -> StreamHeader:
    """The stream header of a ``.mgpu`` file (structure checked, payloads not read)."""
    with ContainerReader(path) as reader:
        return reader.header


def info(src: PathLike) -> dict[str, Any]:
    """What a stream holds: codec, weights hash, quality, geometry, size, and the sidecar report.
    Every packet's CRC is checked (no decoding), so a damaged stream raises here too.

    ``psnr`` and ``report`` come from the ``.mgpu.json`` sidecar when it is present and
    matches the stream (same size and weights), else they are None.
    """
    with ContainerReader(src) as reader:
        header, size, n_packets = reader.header, reader.size, len(reader)
        for i in range(n_packets):  # every packet's CRC: a damaged file is never described as healthy
            reader.read_packet(i)
    plan = _plan_of(header)
    voxels = math.prod(header.shape)
    meta: dict[str, Any] = {
        "path": str(src),
        "bytes": size,
        "bits_per_voxel": bits_per_voxel(size, voxels),
        "container_version": header.version,
        "codec_id": header.codec_id,
        "weights_sha256": header.weights_hash.hex(),
        "quality": header.quality,
        "shape": list(header.shape),
        "dtype": header.dtype,
        "slice_axis": header.slice_axis,
        "gop": plan.gop,
        "num_gops": n_packets,
        "framing": plan.mode,
        "spacing": header.volume.get("spacing"),
        "affine": header.volume.get("affine"),
        "source_format": header.volume.get("source_format"),
        "intensity": header.intensity,
        "sidecar": None,
        "report": None,
        "psnr": None,
    }
    side = sidecar_path(src)
    if side.is_file():
        try:
            doc = read_sidecar(side)
        except MedgpuError:
            doc = {}
        report = doc.get("report")
        if (isinstance(report, Mapping) and report.get("bytes") == size
                and doc.get("codec", {}).get("weights_sha256") == header.weights_hash.hex()):
            meta.update(sidecar=str(side), report=dict(report), psnr=report.get("psnr"))
    return meta

"""The ``.mgpu.json`` sidecar: a human-readable copy of a stream's metadata plus its report.

The container alone is enough to decode; the sidecar is for people and tools that want the
source header fields, codec settings and compression report (bits per voxel, PSNR per slice,
timings) without a decoder. Non-finite floats (a lossless slice has infinite PSNR) are
written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` so the file stays strict JSON, and
read back as floats.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medgpu.bitstream.container import StreamHeader
from medgpu.errors import FormatError, InputError, OutputError

SIDECAR_FORMAT = "medgpu-sidecar"
SIDECAR_VERSION = 1
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def sidecar_path(stream_path: str | os.PathLike[str]) -> Path:
    """``x.mgpu`` -> ``x.mgpu.json``."""
    p = Path(stream_path)
    return p.with_name(p.name + ".json")


def to_json_safe(value: Any) -> Any:
    """Copy of ``value`` with tuples as lists and non-finite floats as "inf"/"-inf"/"nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    return value


def _decode_report(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, dict):
        return {k: _decode_report(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_report(v) for v in value]
    return value


def build_sidecar(header: StreamHeader, report: Mapping[str, Any], stream_name: str) -> dict[str, Any]:
    """The sidecar document for a stream with ``header`` and compression ``report``."""
    volume = dict(header.volume)
    source_header = volume.pop("header", {})
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "stream": stream_name,
        "codec": {
            "id": header.codec_id,
            "weights_sha256": header.weights_hash.hex(),
            "quality": header.quality,
            "container_version": header.version,
        },
        "volume": {
            "shape": list(header.shape),
            "dtype": header.dtype,
            "slice_axis": header.slice_axis,
            **volume,
        },
        "source_header": source_header,
        "intensity": header.intensity,
        "report": dict(report),
    }


def write_sidecar(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write ``document`` as indented strict JSON (not atomic: pass a temporary path)."""
    text = json.dumps(to_json_safe(document), indent=2, sort_keys=False, allow_nan=False)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a sidecar; ``"inf"``/``"nan"`` strings inside ``report`` come back as floats."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read sidecar {p}: {exc}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise FormatError(f"sidecar is not valid JSON: {p}") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise FormatError(f"not a medgpu sidecar: {p}")
    if isinstance(doc.get("report"), dict):
        doc["report"] = _decode_report(doc["report"])
    return doc

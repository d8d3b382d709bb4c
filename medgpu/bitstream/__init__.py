"""Bitstream: the ``.mgpu`` container (packets, index, checksums) and the JSON sidecar."""
from __future__ import annotations

from medgpu.bitstream.container import (
    FORMAT_VERSION,
    MAGIC,
    ContainerReader,
    PacketEntry,
    StreamHeader,
    atomic_paths,
    read_stream_header,
    write_container,
)
from medgpu.bitstream.sidecar import build_sidecar, read_sidecar, sidecar_path, to_json_safe, write_sidecar

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "ContainerReader",
    "PacketEntry",
    "StreamHeader",
    "atomic_paths",
    "build_sidecar",
    "read_sidecar",
    "read_stream_header",
    "sidecar_path",
    "to_json_safe",
    "write_container",
    "write_sidecar",
]

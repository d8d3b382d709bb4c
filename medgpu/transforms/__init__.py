"""MONAI-style transforms that compress and decompress with medgpu (imports MONAI and torch).

Array forms: :class:`CompressToMgpu`, :class:`DecompressMgpu`, :class:`MgpuRoundTrip`;
dictionary forms: ``...d`` (aliases ``...D`` and ``...Dict``), with ``keys``,
``allow_missing_keys`` and meta-dict handling as in MONAI.
"""
from __future__ import annotations

from medgpu.transforms.array import CompressToMgpu, DecompressMgpu, MgpuRoundTrip
from medgpu.transforms.dictionary import (
    CompressToMgpuD,
    CompressToMgpud,
    CompressToMgpuDict,
    DecompressMgpuD,
    DecompressMgpud,
    DecompressMgpuDict,
    MgpuRoundTripD,
    MgpuRoundTripd,
    MgpuRoundTripDict,
)

__all__ = [
    "CompressToMgpu",
    "CompressToMgpuD",
    "CompressToMgpuDict",
    "CompressToMgpud",
    "DecompressMgpu",
    "DecompressMgpuD",
    "DecompressMgpuDict",
    "DecompressMgpud",
    "MgpuRoundTrip",
    "MgpuRoundTripD",
    "MgpuRoundTripDict",
    "MgpuRoundTripd",
]

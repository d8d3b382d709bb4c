"""Content-adaptive encoding: encoder-side adapters and group-aware online updating.

``AdaptConfig`` is cheap to import; the torch-based pieces load on first use.
"""
from __future__ import annotations

from typing import Any

from medgpu.adapt.config import AdaptConfig

_LAZY = {
    "Adapter": "medgpu.adapt.adapters",
    "ParallelAdapted": "medgpu.adapt.adapters",
    "SerialAdapted": "medgpu.adapt.adapters",
    "adapt_encoder": "medgpu.adapt.adapters",
    "adapter_parameters": "medgpu.adapt.adapters",
    "update_gop": "medgpu.adapt.online",
    "encode_adapted_gop": "medgpu.adapt.online",
}

__all__ = ["AdaptConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgpu.adapt' has no attribute {name!r}")

"""Content-adaptive encoding: encoder-side adapters and group-aware online updating."""
from __future__ import annotations

from medgpu.adapt.adapters import Adapter, ParallelAdapted, SerialAdapted, adapt_encoder, adapter_parameters
from medgpu.adapt.online import AdaptConfig, update_gop

__all__ = ["Adapter", "AdaptConfig", "ParallelAdapted", "SerialAdapted", "adapt_encoder", "adapter_parameters", "update_gop"]

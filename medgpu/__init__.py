"""medgpu: neural compression of medical volumes with content-adaptive encoding.

The public API is loaded lazily (``import medgpu`` imports neither numpy, torch nor MONAI)::

    import medgpu
    medgpu.compress("ct.nii.gz", "ct.mgpu", quality=42)          # files, Volumes,
    medgpu.compress(array, "ct.mgpu", affine=affine)              # arrays/tensors + affine,
    medgpu.compress(metatensor, "ct.mgpu")                        # MONAI MetaTensors
    vol = medgpu.decompress("ct.mgpu")                            # Volume
    img = medgpu.decompress("ct.mgpu", output="metatensor")       # or "numpy"/"torch"
    LoadImage(reader=medgpu.MgpuReader)                           # MONAI reader
    medgpu.MgpuRoundTripd(keys="image", quality=30)               # MONAI transforms
    medgpu.bench.run_bench(["ct.nii.gz"], out_dir="bench")        # RD benchmark (module)
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    # for type checkers and IDEs only; at run time __getattr__ imports on first use
    from medgpu import api, bench, convert, transforms  # noqa: F401
    from medgpu.api import decode_slices, info  # noqa: F401
    from medgpu.convert import compress, compress_to_bytes, decompress, from_volume, to_volume  # noqa: F401
    from medgpu.io.mgpu_reader import MgpuReader, register_mgpu_reader  # noqa: F401
    from medgpu.transforms import (  # noqa: F401
        CompressToMgpu,
        CompressToMgpuD,
        CompressToMgpud,
        CompressToMgpuDict,
        DecompressMgpu,
        DecompressMgpuD,
        DecompressMgpud,
        DecompressMgpuDict,
        MgpuRoundTrip,
        MgpuRoundTripD,
        MgpuRoundTripd,
        MgpuRoundTripDict,
    )
    from medgpu.volume import Volume  # noqa: F401

_TRANSFORMS = (
    "CompressToMgpu", "CompressToMgpuD", "CompressToMgpuDict", "CompressToMgpud",
    "DecompressMgpu", "DecompressMgpuD", "DecompressMgpuDict", "DecompressMgpud",
    "MgpuRoundTrip", "MgpuRoundTripD", "MgpuRoundTripDict", "MgpuRoundTripd",
)  # fmt: skip

#: public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "compress": "medgpu.convert",
    "compress_to_bytes": "medgpu.convert",
    "decompress": "medgpu.convert",
    "to_volume": "medgpu.convert",
    "from_volume": "medgpu.convert",
    "decode_slices": "medgpu.api",
    "info": "medgpu.api",
    "Volume": "medgpu.volume",
    "MgpuReader": "medgpu.io.mgpu_reader",
    "register_mgpu_reader": "medgpu.io.mgpu_reader",
    **{name: "medgpu.transforms" for name in _TRANSFORMS},
}

#: submodules reachable as attributes without an explicit import (``medgpu.bench.run_bench``)
_SUBMODULES = ("api", "bench", "convert", "transforms")

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"medgpu.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medgpu' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))

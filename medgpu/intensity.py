"""Mapping between stored voxel values and the codec range [0, 1] (float32).

``y = (x - low) / (high - low)`` with ``low``/``high`` the data's min and max (not
the dtype's range), so the codec range is fully used. The inverse clips ``y`` to
[0, 1], scales back in float64, rounds to the nearest integer for integer dtypes
and casts to the original dtype (so the result is always inside [low, high] and
inside the dtype's range).

Exactness: for integer data with ``high - low <= 2**24`` forward-then-inverse
(no coding in between) returns the original integers exactly: ``k / span`` is
within half a float32 ulp (< 2**-25) of the exact value, so ``y * span`` is within
0.5 of ``k``. Wider integer ranges (int32/uint32/int64 spanning more than 2**24)
and float data are reproduced only up to float32 precision of the mapped value.

Non-finite float values: ``fit`` ignores NaN/inf; ``forward`` maps NaN and -inf
to 0 (the minimum) and +inf to 1 (the maximum). They are not restored by
``inverse``; their counts are recorded (``nan_count``, ``posinf_count``,
``neginf_count``), and :func:`encode_nonfinite` / :func:`restore_nonfinite` keep their
positions as a lossless mask (the stream header carries it; see ``medgpu.api``).
Constant data map to 0.5 and invert to the constant exactly.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["IntensityMapping", "EXACT_INTEGER_SPAN"]

EXACT_INTEGER_SPAN = 2**24
_CHUNK = 1 << 20
_BYTES_VERSION = 1


@dataclass(frozen=True)
class IntensityMapping:
    """Affine map from ``[low, high]`` of dtype ``dtype`` to [0, 1]; fit it with :meth:`fit`."""

    dtype: str
    low: int | float
    high: int | float
    nan_count: int = 0
    posinf_count: int = 0
    neginf_count: int = 0

    def __post_init__(self) -> None:
        dt = np.dtype(self.dtype)
        if dt.kind not in "biuf":
            raise TypeError(f"unsupported dtype for intensity mapping: {dt}")
        if _is_integer(dt):
            object.__setattr__(self, "low", int(self.low))
            object.__setattr__(self, "high", int(self.high))
        else:
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError("low and high must be finite")
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) < low ({self.low})")
        object.__setattr__(self, "dtype", dt.name)

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, array: np.ndarray) -> IntensityMapping:
        """Fit to the min and max of ``array`` (finite values only for floats)."""
        array = np.asarray(array)
        dt = array.dtype.newbyteorder("=")
        if dt.kind not in "biuf":
            raise TypeError(f"unsupported dtype for intensity mapping: {array.dtype}")
        if array.size == 0:
            raise ValueError("cannot fit an intensity mapping to an empty array")
        if _is_integer(dt):
            return cls(dt.name, int(array.min()), int(array.max()))
        finite = np.isfinite(array)
        nan_count = int(np.isnan(array).sum())
        posinf = int(np.isposinf(array).sum())
        neginf = int(np.isneginf(array).sum())
        if finite.all():
            low, high = float(array.min()), float(array.max())
        elif finite.any():
            values = array[finite]
            low, high = float(values.min()), float(values.max())
        else:
            low = high = 0.0
        return cls(dt.name, low, high, nan_count, posinf, neginf)

    # ------------------------------------------------------------------ properties

    @property
    def span(self) -> int | float:
        """``high - low`` (a Python int for integer dtypes, so it never overflows)."""
        return self.high - self.low

    @property
    def is_constant(self) -> bool:
        """True when all (finite) values were equal."""
        return self.span == 0

    @property
    def is_exact(self) -> bool:
        """True when forward-then-inverse reproduces every value exactly."""
        if self.is_constant:
            return True
        return _is_integer(np.dtype(self.dtype)) and self.span <= EXACT_INTEGER_SPAN

    # ------------------------------------------------------------------ mapping

    def forward(self, array: np.ndarray) -> np.ndarray:
        """Map values to float32 in [0, 1] (same shape; values outside [low, high] are clipped)."""
        array = np.asarray(array)
        out = np.empty(array.shape, dtype=np.float32)
        if self.is_constant:
            out.fill(0.5)
            return out
        low, scale, halve = self._float_params()

        def block(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64)
            if halve:
                x *= 0.5
            x -= low
            x *= scale
            np.nan_to_num(x, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
            return np.clip(x, 0.0, 1.0, out=x)

        _chunked(array, out, block)
        return out

    def inverse(self, x01: np.ndarray) -> np.ndarray:
        """Map codec values back to the original dtype (clipped, rounded for integers)."""
        x01 = np.asarray(x01)
        dt = np.dtype(self.dtype)
        out = np.empty(x01.shape, dtype=dt)
        if self.is_constant:
            out.fill(self.low)
            return out
        if _is_integer(dt):
            wide = np.uint64 if dt == np.uint64 else np.int64
            span = float(self.span)
            low = wide(self.low)

            def block(y: np.ndarray) -> np.ndarray:
                y = _clip01(y)
                k = np.rint(y * span).astype(wide)
                k += low
                return k.astype(dt)

        else:
            low_f, _, halve = self._float_params()
            span_f = (0.5 * self.high - 0.5 * self.low) if halve else float(self.span)

            def block(y: np.ndarray) -> np.ndarray:
                v = _clip01(y) * span_f + low_f
                if halve:
                    v *= 2.0
                info = np.finfo(dt)
                return np.clip(v, float(info.min), float(info.max)).astype(dt)

        _chunked(x01, out, block)
        return out

    def _float_params(self) -> tuple[float, float, bool]:
        """(low, 1/span, halve) in float64; halve avoids overflow for spans near float64 max."""
        span = float(self.high) - float(self.low)
        if math.isfinite(span):
            return float(self.low), 1.0 / span, False
        half_span = 0.5 * float(self.high) - 0.5 * float(self.low)
        return 0.5 * float(self.low), 1.0 / half_span, True

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (ints stay exact Python ints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IntensityMapping:
        """Inverse of :meth:`to_dict`."""
        return cls(
            dtype=str(values["dtype"]),
            low=values["low"],
            high=values["high"],
            nan_count=int(values.get("nan_count", 0)),
            posinf_count=int(values.get("posinf_count", 0)),
            neginf_count=int(values.get("neginf_count", 0)),
        )

    def to_bytes(self) -> bytes:
        """Compact little-endian encoding (about 50 bytes) for the container header."""
        dt = np.dtype(self.dtype)
        name = dt.name.encode("ascii")
        fmt = _value_format(dt)
        return (
            struct.pack("<BB", _BYTES_VERSION, len(name))
            + name
            + struct.pack(f"<{fmt}{fmt}", self.low, self.high)
            + struct.pack("<QQQ", self.nan_count, self.posinf_count, self.neginf_count)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IntensityMapping:
        """Inverse of :meth:`to_bytes`."""
        version, length = struct.unpack_from("<BB", data, 0)
        if version != _BYTES_VERSION:
            raise ValueError(f"unknown intensity mapping encoding version {version}")
        name = bytes(data[2 : 2 + length]).decode("ascii")
        fmt = _value_format(np.dtype(name))
        offset = 2 + length
        low, high = struct.unpack_from(f"<{fmt}{fmt}", data, offset)
        offset += struct.calcsize(f"<{fmt}{fmt}")
        counts = struct.unpack_from("<QQQ", data, offset)
        if offset + 24 != len(data):
            raise ValueError("trailing or missing bytes in intensity mapping encoding")
        return cls(name, low, high, *counts)


def _is_integer(dt: np.dtype) -> bool:
    return dt.kind in "biu"


def _value_format(dt: np.dtype) -> str:
    if dt.kind == "f":
        return "d"
    return "Q" if dt == np.uint64 else "q"


def _clip01(y: np.ndarray) -> np.ndarray:
    y = np.nan_to_num(y.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(y, 0.0, 1.0, out=y)


def _chunked(src: np.ndarray, out: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """Apply ``fn`` elementwise in blocks so float64 temporaries stay small."""
    flat_src = src.reshape(-1)
    flat_out = out.reshape(-1)
    for start in range(0, flat_src.size, _CHUNK):
        stop = min(start + _CHUNK, flat_src.size)
        flat_out[start:stop] = fn(flat_src[start:stop])


# ------------------------------------------------------------------ non-finite voxels

NONFINITE_CODES = {1: np.nan, 2: np.inf, 3: -np.inf}
"""Codes of the lossless non-finite mask: 0 finite, 1 NaN, 2 +inf, 3 -inf."""


def encode_nonfinite(frames: Sequence[np.ndarray]) -> str | None:
    """The positions of NaN/+inf/-inf in ``frames`` (GoPs in packet order), as zlib-compressed
    uint8 codes in base64; None when every value is finite (or the dtype is integer)."""
    import base64
    import zlib

    if not frames or np.dtype(frames[0].dtype).kind != "f":
        return None
    codes = np.concatenate([(np.isnan(f) * 1 + np.isposinf(f) * 2 + np.isneginf(f) * 3).astype(np.uint8).ravel()
                            for f in frames])
    if not codes.any():
        return None
    return base64.b64encode(zlib.compress(codes.tobytes(), 9)).decode("ascii")


def decode_nonfinite(text: str, count: int) -> np.ndarray:
    """Inverse of :func:`encode_nonfinite`: ``count`` uint8 codes (flat, GoP frame order)."""
    import base64
    import zlib

    codes = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    if codes.size != count or codes.max(initial=0) > 3:
        raise ValueError("non-finite mask does not match the volume")
    return codes


def restore_nonfinite(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Put NaN/+inf/-inf back into decoded float ``values`` where ``codes`` (same size) say so."""
    flat = values.reshape(-1)
    for code, value in NONFINITE_CODES.items():
        flat[codes.reshape(-1) == code] = value
    return values

"""Classical-codec baselines applied to the same voxels as medgpu.

Every codec here takes an *integer* volume and a slice axis, codes the slices (as
still images or as video frames) with a standard codec, decodes the real
compressed streams again and returns the decoded volume (same dtype and shape) and
the exact number of bytes of those streams.

Voxel pipeline shared by all codecs
-----------------------------------
1. Slices are taken along ``slice_axis`` (0..2); a 4-D volume (X, Y, Z, T, ...) is
   coded as T*Z frames (all slices of time point 0, then time point 1, ...).
2. The volume minimum is subtracted, giving unsigned codes ``0..R`` (``R`` = max -
   min). Signed data are therefore handled by an offset; the offset and ``R`` are
   two numbers of side information that are not counted in the byte counts.
3. Each codec works at a bit depth it supports:

   * JPEG 2000, JPEG-LS, lossless HTJ2K / JPEG XL: the codes at their own bit
     depth ``ceil(log2(R + 1))`` (e.g. 12 bits for a CT with range 4095).
   * x265 (HEVC, gray12le) and AV1 (libaom, gray12le): the codes are linearly
     mapped onto the full 12-bit range ``0..4095``. If ``R <= 4095`` that mapping
     is exactly invertible; if ``R > 4095`` the data are *requantised* to 12 bits
     first and that rounding counts in the distortion (it is part of the codec's
     pipeline, so this is fair).
   * lossy HTJ2K and JPEG XL: codes are mapped onto the full 16-bit range so that
     their quantisation parameter is relative to the data range.
   * ``R > 65535`` (32-bit integer data) is requantised to 16 bits for every codec.

4. Decoded codes are mapped back, rounded, clipped to the original min..max and
   cast to the input dtype.

Floating-point volumes must be mapped to integers first; :func:`to_uint16_codes`
maps min..max onto ``0..65535`` (an extra quantisation with step
``(max - min) / 65535``, i.e. a PSNR ceiling of about 107 dB over the data range)
and :func:`from_uint16_codes` maps back.

The registry :data:`CLASSICAL_CODECS` maps a codec name to a :class:`ClassicalCodec`;
:func:`run_classical` is the one-call interface and :func:`sweep` lists rate
parameters from low to high rate (roughly 0.05..4 bits per voxel on CT/MR data).
"""
from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "CLASSICAL_CODECS",
    "ClassicalCodec",
    "ClassicalResult",
    "EncodedVolume",
    "IntensityMapping",
    "available_classical_codecs",
    "decode_classical",
    "encode_classical",
    "frames_to_volume",
    "from_uint16_codes",
    "run_classical",
    "run_classical_detailed",
    "sweep",
    "to_uint16_codes",
    "volume_to_frames",
]

VIDEO_GOP = 30  #: GoP length of the video codecs (same as medgpu's default).
VIDEO_FPS = 25  #: nominal frame rate given to the video encoders (irrelevant for CRF).


# --------------------------------------------------------------------------- mapping


@dataclass(frozen=True)
class IntensityMapping:
    """Linear map between real intensities ``lo..hi`` and integer codes ``0..levels``."""

    lo: float
    hi: float
    levels: int = 65535

    @property
    def step(self) -> float:
        """Real-valued width of one code (the quantisation step)."""
        return (self.hi - self.lo) / self.levels if self.hi > self.lo else 1.0


def to_uint16_codes(volume: np.ndarray) -> tuple[np.ndarray, IntensityMapping]:
    """Map a (float or integer) volume linearly from its min..max onto uint16 ``0..65535``.

    This is an extra quantisation (step ``(max-min)/65535``, max error half a step);
    codecs then see the uint16 codes and the PSNR must be measured against the
    original array after :func:`from_uint16_codes`.
    """
    v = np.asarray(volume, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    m = IntensityMapping(lo, hi)
    v = np.nan_to_num(v, nan=lo, posinf=hi, neginf=lo)
    codes = np.clip(np.rint((v - lo) / m.step), 0, m.levels).astype(np.uint16)
    return codes, m


def from_uint16_codes(codes: np.ndarray, mapping: IntensityMapping, dtype: Any = np.float32) -> np.ndarray:
    """Inverse of :func:`to_uint16_codes`: codes back to real intensities of ``dtype``."""
    out = np.asarray(codes, dtype=np.float64) * mapping.step + mapping.lo
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dt)


# --------------------------------------------------------------------------- framing


def volume_to_frames(volume: np.ndarray, slice_axis: int) -> np.ndarray:
    """Slices of ``volume`` along ``slice_axis`` as a ``[N, H, W]`` array (a view when possible).

    Axes beyond the third (time, echoes, ...) are outer loops: frames are all slices
    of index 0 of the extra axes, then of index 1, and so on.
    """
    v = np.asarray(volume)
    if v.ndim == 2:
        return v[None]
    if v.ndim < 2:
        raise ValueError(f"need a 2-D or larger array, got shape {v.shape}")
    if not 0 <= slice_axis < 3:
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    v = np.moveaxis(v, slice_axis, 0)  # (Z, a, b, extra...)
    extra = v.ndim - 3
    if extra:
        v = np.moveaxis(v, list(range(3, v.ndim)), list(range(extra)))  # (extra..., Z, a, b)
    return v.reshape((-1,) + v.shape[-2:])


def frames_to_volume(frames: np.ndarray, shape: Sequence[int], slice_axis: int) -> np.ndarray:
    """Inverse of :func:`volume_to_frames` for a volume of ``shape``."""
    shape = tuple(int(s) for s in shape)
    f = np.asarray(frames)
    if len(shape) == 2:
        return f.reshape(shape)
    moved = [shape[slice_axis]] + [s for i, s in enumerate(shape[:3]) if i != slice_axis]
    extra = list(shape[3:])
    v = f.reshape(extra + moved)
    if extra:
        v = np.moveaxis(v, list(range(len(extra))), list(range(3, 3 + len(extra))))
    return np.moveaxis(v, 0, slice_axis)


# --------------------------------------------------------------------------- helpers


def _bits_for(rng: int) -> int:
    return max(1, int(rng).bit_length())


def _to_scale(codes: np.ndarray, rng: int, top: int) -> np.ndarray:
    """Codes ``0..rng`` -> ``0..top`` (rounded linear map), uint16."""
    if rng == top:
        return codes.astype(np.uint16)
    if rng <= 0:
        return np.zeros(codes.shape, np.uint16)
    return np.rint(codes.astype(np.float64) * (top / rng)).astype(np.uint16)


def _from_scale(values: np.ndarray, rng: int, top: int) -> np.ndarray:
    """Values ``0..top`` -> float codes ``0..rng``."""
    if rng == top:
        return values.astype(np.float64)
    return values.astype(np.float64) * (rng / top)


def _pad_frames(frames: np.ndarray, multiple: int = 8, minimum: int = 16) -> np.ndarray:
    """Edge-replicate frames up to a multiple of ``multiple`` (and at least ``minimum``)."""
    _, h, w = frames.shape
    ph = max(minimum, -(-h // multiple) * multiple) - h
    pw = max(minimum, -(-w // multiple) * multiple) - w
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(frames)
    return np.pad(frames, ((0, 0), (0, ph), (0, pw)), mode="edge")


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def _ffmpeg_has_encoder(encoder: str) -> bool:
    exe = _ffmpeg()
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[1:2] == [encoder] for line in out.stdout.splitlines() if line.strip())


def _imagecodecs_has(name: str) -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(getattr(imagecodecs, name, None), "available", False))


# --------------------------------------------------------------------------- codec type


#: encode(codes [N,H,W] int64 in 0..R, R, param) -> (payload chunks, decoder info)
EncodeFn = Callable[[np.ndarray, int, float], tuple[list[bytes], dict]]
#: decode(payload chunks, decoder info) -> float codes [N,H,W] in 0..R
DecodeFn = Callable[[list[bytes], dict], np.ndarray]


@dataclass(frozen=True)
class ClassicalCodec:
    """A classical codec: name, rate parameter semantics and encode/decode functions."""

    name: str
    description: str
    param_name: str
    sweep: tuple[float, ...]  # low rate -> high rate
    lossless_param: float | None
    file_ext: str
    encode: EncodeFn
    decode: DecodeFn
    available: Callable[[], bool]
    max_bits: int = 16


@dataclass(frozen=True)
class EncodedVolume:
    """The real compressed streams of one volume plus what is needed to decode them."""

    codec: str
    param: float
    payload: tuple[bytes, ...]
    shape: tuple[int, ...]
    dtype: str
    slice_axis: int
    offset: int
    value_range: int
    info: dict = field(default_factory=dict)
    encode_seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        """Total size of the compressed streams in bytes."""
        return sum(len(p) for p in self.payload)

    def save(self, directory: str | Path) -> list[Path]:
        """Write the streams as files (one per slice for image codecs, one for video)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        ext = CLASSICAL_CODECS[self.codec].file_ext
        paths = []
        for i, chunk in enumerate(self.payload):
            p = d / (f"stream.{ext}" if len(self.payload) == 1 else f"slice_{i:05d}.{ext}")
            p.write_bytes(chunk)
            paths.append(p)
        return paths


@dataclass(frozen=True)
class ClassicalResult:
    """Outcome of :func:`run_classical_detailed`."""

    decoded: np.ndarray
    nbytes: int
    encode_seconds: float
    decode_seconds: float
    num_frames: int


# --------------------------------------------------------------------------- JPEG 2000


def _j2k_encode(codes: np.ndarray, rng: int, param: float) -> tuple[list[bytes], dict]:
    import imagecodecs

    bits = _bits_for(rng)
    arr = codes.astype(np.uint8 if bits <= 8 else np.uint16)
    lossless = not math.isfinite(param)
    out = []
    for sl in arr:
        kw: dict[str, Any] = {"codecformat": "j2k", "bitspersample": bits, "reversible": lossless}
        if min(sl.shape) < 64:
            kw["resolutions"] = max(1, min(6, int(math.log2(max(1, min(sl.shape))))))
        if not lossless:
            kw["level"] = float(param)
        out.append(bytes(imagecodecs.jpeg2k_encode(np.ascontiguousarray(sl), **kw)))
    return out, {}


def _j2k_decode(payload: list[bytes], info: dict) -> np.ndarray:
    import imagecodecs

    return np.stack([imagecodecs.jpeg2k_decode(p) for p in payload]).astype(np.float64)


# --------------------------------------------------------------------------- HTJ2K


def _htj2k_encode(codes: np.ndarray, rng: int, param: float) -> tuple[list[bytes], dict]:
    import imagecodecs

    lossless = param <= 0
    arr = codes.astype(np.uint16) if lossless else _to_scale(codes, rng, 65535)
    out = []
    for sl in arr:
        kw: dict[str, Any] = {"reversible": lossless}
        if min(sl.shape) < 64:
            kw["resolutions"] = max(1, min(5, int(math.log2(max(1, min(sl.shape)))) - 1))
        if not lossless:
            kw["level"] = float(param)
        out.append(bytes(imagecodecs.htj2k_encode(np.ascontiguousarray(sl), **kw)))
    return out, {"top": None if lossless else 65535, "rng": rng}


def _htj2k_decode(payload: list[bytes], info: dict) -> np.ndarray:
    import imagecodecs

    dec = np.stack([imagecodecs.htj2k_decode(p) for p in payload])
    return dec.astype(np.float64) if info["top"] is None else _from_scale(dec, info["rng"], info["top"])


# --------------------------------------------------------------------------- JPEG XL


def _jxl_encode(codes: np.ndarray, rng: int, param: float) -> tuple[list[bytes], dict]:
    import imagecodecs

    lossless = param <= 0
    bits = _bits_for(rng)
    arr = codes.astype(np.uint16) if lossless else _to_scale(codes, rng, 65535)
    out = []
    for sl in arr:
        sl = np.ascontiguousarray(sl)
        if lossless and bits <= 8:  # libjxl refuses 16-bit samples declared as 8 bits: code them as bytes
            enc = imagecodecs.jpegxl_encode(sl.astype(np.uint8), lossless=True, effort=7)
        elif lossless:
            enc = imagecodecs.jpegxl_encode(sl, lossless=True, bitspersample=bits, effort=7)
        else:
            enc = imagecodecs.jpegxl_encode(sl, distance=float(param), effort=7)
        out.append(bytes(enc))
    return out, {"top": None if lossless else 65535, "rng": rng}


def _jxl_decode(payload: list[bytes], info: dict) -> np.ndarray:
    import imagecodecs

    dec = np.stack([imagecodecs.jpegxl_decode(p) for p in payload])
    return dec.astype(np.float64) if info["top"] is None else _from_scale(dec, info["rng"], info["top"])


# --------------------------------------------------------------------------- JPEG-LS


def _jls_near(rng: int, param: float) -> int:
    return 0 if param <= 0 else max(1, int(round(param * rng)))


def _jls_encode(codes: np.ndarray, rng: int, param: float) -> tuple[list[bytes], dict]:
    import imagecodecs

    arr = codes.astype(np.uint8 if _bits_for(rng) <= 8 else np.uint16)
    near = _jls_near(rng, param)
    return [bytes(imagecodecs.jpegls_encode(np.ascontiguousarray(sl), level=near)) for sl in arr], {}


def _jls_decode(payload: list[bytes], info: dict) -> np.ndarray:
    import imagecodecs

    return np.stack([imagecodecs.jpegls_decode(p) for p in payload]).astype(np.float64)


# --------------------------------------------------------------------------- ffmpeg video


def _ffmpeg_video_encode(
    codes: np.ndarray, rng: int, codec_args: list[str], fmt: str, ext: str
) -> tuple[list[bytes], dict]:
    exe = _ffmpeg()
    if exe is None:
        raise RuntimeError("ffmpeg not found on PATH")
    n, h, w = codes.shape
    frames = _pad_frames(_to_scale(codes, rng, 4095))
    _, ph, pw = frames.shape
    with tempfile.TemporaryDirectory(prefix="medgpu_ff_") as td:
        out = Path(td) / f"stream.{ext}"
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "gray12le", "-s", f"{pw}x{ph}", "-r", str(VIDEO_FPS),
            "-i", "-", "-an", *codec_args, "-f", fmt, "-y", str(out),
        ]  # fmt: skip
        proc = subprocess.run(cmd, input=frames.astype("<u2").tobytes(), capture_output=True)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"ffmpeg encode failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
        data = out.read_bytes()
    return [data], {"rng": rng, "n": n, "h": h, "w": w, "ph": ph, "pw": pw, "fmt": fmt, "ext": ext}


def _ffmpeg_video_decode(payload: list[bytes], info: dict) -> np.ndarray:
    exe = _ffmpeg()
    if exe is None:
        raise RuntimeError("ffmpeg not found on PATH")
    with tempfile.TemporaryDirectory(prefix="medgpu_ff_") as td:
        src = Path(td) / f"stream.{info['ext']}"
        src.write_bytes(payload[0])
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", info["fmt"], "-i", str(src),
            "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray12le", "-",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg decode failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    n, ph, pw = info["n"], info["ph"], info["pw"]
    raw = np.frombuffer(proc.stdout, dtype="<u2")
    if raw.size != n * ph * pw:
        raise RuntimeError(f"ffmpeg decoded {raw.size / (ph * pw):.2f} frames, expected {n}")
    frames = raw.reshape(n, ph, pw)[:, : info["h"], : info["w"]]
    return _from_scale(frames, info["rng"], 4095)


def _x265_encode(codes: np.ndarray, rng: int, param: float) -> tuple[list[bytes], dict]:
    x265_params = (
        f"crf={param:g}:keyint={VIDEO_GOP}:min-keyint={VIDEO_GOP}:scenecut=0:open-gop=0"
        ":info=0:log-level=error"
    )
    args = ["-c:v", "libx265", "-preset", "medium", "-x265-params", x265_params]
    return _ffmpeg_video_encode(codes, rng, args, "hevc", "hevc")


def _av1_encode(codes: np.ndarray, rng: int, param: float) -> tuple[list[bytes], dict]:
    args = [
        "-c:v", "libaom-av1", "-crf", f"{int(round(param))}", "-b:v", "0", "-cpu-used", "6",
        "-row-mt", "1", "-g", str(VIDEO_GOP), "-keyint_min", str(VIDEO_GOP),
    ]  # fmt: skip
    return _ffmpeg_video_encode(codes, rng, args, "obu", "obu")


# --------------------------------------------------------------------------- registry


def _build_registry() -> Mapping[str, ClassicalCodec]:
    codecs = [
        ClassicalCodec(
            name="jpeg2000",
            description="JPEG 2000 (OpenJPEG via imagecodecs), per slice, raw J2K codestream; "
            "param = target PSNR in dB over 2**bits-1 (inf = lossless 5/3 wavelet)",
            param_name="psnr_target_db",
            sweep=(20.0, 25.0, 30.0, 37.0, 44.0, 51.0, 58.0, 65.0, 72.0),
            lossless_param=math.inf,
            file_ext="j2k",
            encode=_j2k_encode,
            decode=_j2k_decode,
            available=lambda: _imagecodecs_has("JPEG2K"),
        ),
        ClassicalCodec(
            name="x265",
            description=f"HEVC (x265 via ffmpeg), gray12le monochrome, preset medium, closed GoP "
            f"{VIDEO_GOP}, raw Annex-B bitstream; param = CRF 0..51 (lower = more bits; x265 "
            "cannot go below QP 0, which caps 12-bit quality at roughly 60-63 dB)",
            param_name="crf",
            sweep=(48.0, 40.0, 32.0, 24.0, 16.0, 8.0, 0.0),
            lossless_param=None,
            file_ext="hevc",
            encode=_x265_encode,
            decode=_ffmpeg_video_decode,
            available=lambda: _ffmpeg_has_encoder("libx265"),
            max_bits=12,
        ),
        ClassicalCodec(
            name="htj2k",
            description="High-throughput JPEG 2000 (OpenJPH via imagecodecs), per slice; "
            "param = quantisation step relative to the data range (0 = lossless)",
            param_name="qstep",
            sweep=(0.25, 0.12, 0.06, 0.02, 0.007, 0.0025, 0.0009, 0.0003),
            lossless_param=0.0,
            file_ext="j2c",
            encode=_htj2k_encode,
            decode=_htj2k_decode,
            available=lambda: _imagecodecs_has("HTJ2K"),
        ),
        ClassicalCodec(
            name="jpegxl",
            description="JPEG XL (libjxl via imagecodecs), per slice, effort 7; "
            "param = butteraugli distance (0 = lossless)",
            param_name="distance",
            sweep=(12.0, 6.0, 3.0, 1.5, 0.6, 0.2),
            lossless_param=0.0,
            file_ext="jxl",
            encode=_jxl_encode,
            decode=_jxl_decode,
            available=lambda: _imagecodecs_has("JPEGXL"),
        ),
        ClassicalCodec(
            name="jpegls",
            description="JPEG-LS (CharLS via imagecodecs), per slice, near-lossless; "
            "param = NEAR as a fraction of the data range (0 = lossless)",
            param_name="near_fraction",
            sweep=(0.08, 0.04, 0.02, 0.01, 0.005, 0.0025, 0.00125, 0.0005),
            lossless_param=0.0,
            file_ext="jls",
            encode=_jls_encode,
            decode=_jls_decode,
            available=lambda: _imagecodecs_has("JPEGLS"),
        ),
        ClassicalCodec(
            name="av1",
            description=f"AV1 (libaom via ffmpeg), gray12le monochrome (professional profile), "
            f"cpu-used 6, GoP {VIDEO_GOP}, raw OBU stream; param = CRF 1..63 (lower = more bits; 0 = lossless)",
            param_name="crf",
            sweep=(58.0, 48.0, 38.0, 28.0, 18.0, 8.0),
            lossless_param=0.0,
            file_ext="obu",
            encode=_av1_encode,
            decode=_ffmpeg_video_decode,
            available=lambda: _ffmpeg_has_encoder("libaom-av1"),
            max_bits=12,
        ),
    ]
    return MappingProxyType({c.name: c for c in codecs})


#: name -> codec. Read-only.
CLASSICAL_CODECS: Mapping[str, ClassicalCodec] = _build_registry()


def _get(name: str) -> ClassicalCodec:
    try:
        return CLASSICAL_CODECS[name]
    except KeyError:
        raise KeyError(f"unknown classical codec {name!r}; known: {sorted(CLASSICAL_CODECS)}") from None


def available_classical_codecs() -> list[str]:
    """Names of the codecs whose library/encoder is installed."""
    return [n for n, c in CLASSICAL_CODECS.items() if c.available()]


def sweep(name: str) -> list[float]:
    """Rate parameters of codec ``name`` ordered from low to high rate (~0.05..4 bpv)."""
    return list(_get(name).sweep)


# --------------------------------------------------------------------------- public API


def encode_classical(name: str, volume: np.ndarray, slice_axis: int, param: float) -> EncodedVolume:
    """Encode an integer volume with codec ``name`` at rate parameter ``param``."""
    codec = _get(name)
    vol = np.asarray(volume)
    if vol.dtype.kind not in "iu":
        raise TypeError(f"integer volume required, got {vol.dtype}; map floats with to_uint16_codes() first")
    frames = volume_to_frames(vol, slice_axis)
    lo = int(vol.min()) if vol.size else 0
    rng = int(vol.max()) - lo if vol.size else 0
    codes = frames.astype(np.int64) - lo
    info: dict[str, Any] = {}
    if rng > 65535:  # 32-bit data: requantise to 16 bits (counts in the distortion)
        info["requantised_from"] = rng
        codes = np.rint(codes * (65535 / rng)).astype(np.int64)
        coded_rng = 65535
    else:
        coded_rng = rng
    t0 = time.perf_counter()
    payload, cinfo = codec.encode(codes, coded_rng, float(param))
    dt = time.perf_counter() - t0
    info.update(cinfo)
    return EncodedVolume(
        codec=name,
        param=float(param),
        payload=tuple(payload),
        shape=tuple(vol.shape),
        dtype=vol.dtype.str,
        slice_axis=int(slice_axis),
        offset=lo,
        value_range=coded_rng,
        info=info,
        encode_seconds=dt,
    )


def decode_classical(encoded: EncodedVolume) -> np.ndarray:
    """Decode an :class:`EncodedVolume` back to a volume of the original shape and dtype."""
    codec = _get(encoded.codec)
    codes = codec.decode(list(encoded.payload), encoded.info)
    if "requantised_from" in encoded.info:
        codes = codes * (encoded.info["requantised_from"] / 65535)
        top = encoded.info["requantised_from"]
    else:
        top = encoded.value_range
    values = np.clip(np.rint(codes), 0, top) + encoded.offset
    dtype = np.dtype(encoded.dtype)
    info = np.iinfo(dtype)
    values = np.clip(values, info.min, info.max).astype(dtype)
    return frames_to_volume(values, encoded.shape, encoded.slice_axis)


def run_classical_detailed(name: str, volume_int: np.ndarray, slice_axis: int, param: float) -> ClassicalResult:
    """Encode and decode, returning the decoded volume, byte count and timings."""
    enc = encode_classical(name, volume_int, slice_axis, param)
    t0 = time.perf_counter()
    dec = decode_classical(enc)
    dt = time.perf_counter() - t0
    n = int(np.prod(enc.shape)) // max(1, int(np.prod(dec.shape[:slice_axis] + dec.shape[slice_axis + 1 : 3])))
    return ClassicalResult(dec, enc.nbytes, enc.encode_seconds, dt, n)


def run_classical(name: str, volume_int: np.ndarray, slice_axis: int, param: float) -> tuple[np.ndarray, int]:
    """Code ``volume_int`` with ``name`` at ``param``: (decoded volume, bytes of the real streams)."""
    r = run_classical_detailed(name, volume_int, slice_axis, param)
    return r.decoded, r.nbytes

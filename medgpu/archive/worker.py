"""What a worker does with one series: read it, compress it, verify the written stream.

:func:`run_task` runs in a worker process (local pool or Dask) or in the coordinator
(``workers=0``). It takes a plain dict and returns a plain dict, so it travels through
any executor; it never touches the ledger (see :mod:`medgpu.archive.ledger`). Failures are
returned, not raised, classified as

* ``"input"``: the input cannot be read -- the series is *skipped* and reported;
* ``"transient"``: worth retrying (I/O errors with a retryable errno, memory, timeouts,
  a verification mismatch);
* ``"permanent"``: anything else -- the series *fails* (and gets a new chance in a later run).

Streams are written with :func:`medgpu.api.compress` (temporary file + atomic rename) at a
path fixed by the series, so a repeated attempt replaces, never duplicates.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgpu.errors import InputError, MedgpuError

if TYPE_CHECKING:  # pragma: no cover
    from medgpu.codec.registry import VolumeCodec
    from medgpu.volume import Volume

__all__ = ["CodecSpec", "is_transient", "load_series", "run_task"]

_TRANSIENT_ERRNOS = {
    errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.ENOSPC,
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EDQUOT,
}


@dataclass(frozen=True)
class CodecSpec:
    """How a worker builds the codec: registry name, weights file or shipped weights.

    ``pretrained=False`` means the seeded random weights (tests only).
    """

    name: str | None = None
    weights: str | None = None
    pretrained: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CodecSpec:
        d = d or {}
        return cls(name=d.get("name"), weights=d.get("weights"), pretrained=bool(d.get("pretrained", True)))

    def load(self, device: str = "cpu") -> VolumeCodec:
        """The codec, cached per process (a worker loads it once)."""
        cache_key = (self, device)
        if cache_key not in _CODECS:
            from medgpu.codec import available_codecs, load_codec

            if self.name is not None and self.name not in available_codecs():
                raise InputError(f"unknown codec {self.name!r}; available: {', '.join(available_codecs())}")
            if self.weights is not None and not Path(self.weights).is_file():
                raise InputError(f"no such weights file: {self.weights}")
            try:
                _CODECS[cache_key] = load_codec(self.name, device=device, pretrained=self.pretrained,
                                                weights=self.weights)
            except FileNotFoundError as exc:
                raise InputError(f"codec weights are not installed: {exc.filename or exc}") from None
        return _CODECS[cache_key]


_CODECS: dict[tuple[CodecSpec, str], Any] = {}  # per-process cache of loaded codecs


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` worth a retry (infrastructure, not the data)?"""
    if isinstance(exc, (MemoryError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return True  # CUDA OOM
    return False


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0][:300] if lines else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, MedgpuError) else text


def load_series(task: dict[str, Any]) -> Volume:
    """Read the task's input: one NIfTI/DICOM file, or a DICOM series spread over files.

    A multi-file series is read through a private staging folder of symlinks (under the
    task's ``work_dir``), removed afterwards. Errors reading the data become
    :class:`InputError` unless they are transient I/O errors.
    """
    from medgpu.io import load_dicom, load_volume

    paths = [Path(p) for p in task["source"].get("paths", [])]
    if not paths:
        raise InputError(f"{task['key']}: no input files")
    staging: Path | None = None
    try:
        if task["kind"] == "nifti" or len(paths) == 1:
            if not paths[0].exists():
                raise InputError(f"no such file: {paths[0]}")
            volume = load_volume(paths[0])
            volume.path = str(paths[0])
        else:
            work = Path(task["work_dir"])
            work.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="series-", dir=work))
            for i, p in enumerate(paths):
                if not p.is_file():
                    raise InputError(f"no such file: {p}")
                link = staging / f"{i:06d}.dcm"
                try:
                    os.symlink(p, link)
                except OSError:
                    shutil.copy2(p, link)
            volume = load_dicom(staging, series_uid=task["source"].get("series_uid"))
            volume.path = os.path.commonpath([str(p.parent) for p in paths])
    except MedgpuError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        raise InputError(f"cannot read {task['key'].removeprefix('file:')}: {_one_line(exc)}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if volume.array.size == 0:
        raise InputError(f"{task['key']}: no voxels")
    if volume.array.dtype.kind not in "biuf":
        raise InputError(f"{task['key']}: voxel type {volume.array.dtype} cannot be coded")
    return volume


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(stream: Path, volume: Volume, report: dict[str, Any], codec: VolumeCodec, device: str) -> float:
    """Decode the stream *as it lies on disk*; check size, shape, dtype and PSNR against the report."""
    import math

    import numpy as np

    from medgpu import api
    from medgpu.metrics import psnr

    size = stream.stat().st_size
    if size != report["bytes"]:
        raise _VerifyError(f"stream is {size} bytes on disk, the report says {report['bytes']}")
    decoded = api.decompress(stream, codec=codec, device=device).array
    if decoded.shape != volume.array.shape or decoded.dtype != volume.array.dtype:
        raise _VerifyError(f"decoded {decoded.shape} {decoded.dtype}, expected {volume.array.shape} {volume.array.dtype}")
    value = psnr(volume.array, decoded)
    expected = report["psnr"]
    same = (math.isinf(value) and math.isinf(expected)) or bool(np.isclose(value, expected, rtol=0, atol=1e-6))
    if not same:
        raise _VerifyError(f"decoded PSNR {value:.6f} dB differs from the report's {expected:.6f} dB")
    return value


class _VerifyError(Exception):
    """The written stream does not decode to what was coded (retried: disk or memory fault)."""


_QUIET: list[bool] = []


def _quiet_worker_process() -> None:
    """In a worker process (not the coordinator), keep library warnings and log records off
    the shared stderr, as the CLI does for itself (``MEDGPU_DEBUG=1`` keeps them)."""
    import multiprocessing

    if _QUIET or os.environ.get("MEDGPU_DEBUG") or multiprocessing.current_process().name == "MainProcess":
        return
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    _QUIET.append(True)


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Archive one series (see the module doc); never raises for a failure of the series."""
    t0 = time.perf_counter()
    _quiet_worker_process()
    out: dict[str, Any] = {"key": task["key"], "pid": os.getpid(), "host": os.uname().nodename}
    previous_threads = None
    try:
        import torch

        threads = int(task.get("threads") or 0)
        if threads > 0 and torch.get_num_threads() != threads:
            previous_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        volume = load_series(task)
        opts = task["options"]
        from medgpu import api

        device = api.resolve_device(opts.get("device", "cpu"))
        codec = CodecSpec.from_dict(task.get("codec")).load(device)
        stream = Path(task["stream"])
        stream.parent.mkdir(parents=True, exist_ok=True)
        report = api.compress(volume, stream, quality=opts.get("quality"), gop=opts.get("gop", api.DEFAULT_GOP),
                              slice_axis=opts.get("slice_axis"), device=device, overwrite=True, codec=codec)
        checked_psnr = _verify(stream, volume, report, codec, device) if task.get("verify", True) else report["psnr"]
        out.update(
            status="done",
            stream=str(stream),
            bytes=int(report["bytes"]),
            original_bytes=int(volume.array.nbytes),
            ratio=float(report["compression_ratio"]),
            psnr=float(checked_psnr),
            bits_per_voxel=float(report["bits_per_voxel"]),
            shape=list(volume.array.shape),
            dtype=str(volume.array.dtype),
            quality=int(report["quality"]),
            sha256=_sha256(stream),
            verified=bool(task.get("verify", True)),
        )
    except InputError as exc:
        out.update(status="error", error_kind="input", error=str(exc))
    except _VerifyError as exc:
        out.update(status="error", error_kind="transient", error=f"verification failed: {exc}")
    except BaseException as exc:  # the worker must report, not die
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        kind = "transient" if is_transient(exc) else "permanent"
        out.update(status="error", error_kind=kind, error=_one_line(exc))
        if os.environ.get("MEDGPU_DEBUG"):
            out["traceback"] = traceback.format_exc()
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
    out["seconds"] = time.perf_counter() - t0
    return out

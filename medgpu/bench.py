"""Rate-distortion benchmark: medgpu against classical codecs on the same voxels.

Used by ``medgpu bench`` and meant to be shared with ``pipelines/evaluate.py``
(:func:`run_medgpu`, :func:`run_baseline`, :func:`rd_points`, :func:`bd_table`,
:func:`write_csv_json`, :func:`plot_rd_curves`, :func:`crop_slices`, :func:`num_frames`).

What is measured, per volume and codec point:

* rate: bits per voxel from the bytes really written (medgpu: the whole ``.mgpu`` file,
  sidecar not counted; classical codecs: their codestreams / bitstreams);
* distortion: PSNR over the original data range (:func:`medgpu.metrics.psnr`), from the
  original array and the decoded one (both computed here);
* encode / decode seconds per slice (wall clock);
* for the classical codecs with a lossless mode, the lossless bits per voxel (rows with
  ``mode="lossless"``, left out of the RD curves and BD metrics).

Classical codecs run through :mod:`medgpu.baselines` (float volumes mapped to uint16 codes
first, that quantisation counted in their PSNR); BD-rate is the PCHIP Bjøntegaard delta
of :func:`medgpu.metrics.bd_rate`.
"""
from __future__ import annotations

import csv
import datetime as _dt
import functools
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medgpu import baselines
from medgpu.errors import InputError, OptionError
from medgpu.framing import DEFAULT_GOP
from medgpu.metrics import bd_psnr, bd_rate, bits_per_voxel, psnr

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from medgpu.codec.registry import VolumeCodec
    from medgpu.volume import Volume

__all__ = [
    "CSV_FIELDS",
    "DEFAULT_QUALITIES",
    "BenchResult",
    "bd_table",
    "crop_slices",
    "default_pairs",
    "json_safe",
    "load_medgpu",
    "num_frames",
    "plot_rd_curves",
    "rd_points",
    "render_tables",
    "result_row",
    "run_baseline",
    "run_bench",
    "run_lossless",
    "run_medgpu",
    "write_csv_json",
]

log = logging.getLogger(__name__)

DEFAULT_QUALITIES = (0, 16, 32, 48, 63)
CSV_FIELDS = (
    "volume", "codec", "mode", "param_name", "param", "shape", "slice_axis", "num_slices", "voxels",
    "bytes", "bits_per_voxel", "psnr", "encode_s_per_slice", "decode_s_per_slice",
    "compress_call_s_per_slice", "report_bits_per_voxel", "report_psnr", "payload_bytes", "notes",
)  # fmt: skip

OnPoint = Callable[[Mapping[str, Any]], None]
"""Called with every result row as soon as it is measured (progress bars, logging)."""

MedgpuApi = tuple[Callable[..., dict[str, Any]], Callable[..., Any]]
"""``(compress, decompress)`` of :mod:`medgpu.api`, bound to one loaded codec."""


# --------------------------------------------------------------------------- volumes


def num_frames(shape: Sequence[int], axis: int) -> int:
    """Number of 2-D frames the volume is coded as (slices x extra dims)."""
    if len(shape) == 2:
        return 1
    return int(np.prod(shape)) // int(np.prod([s for i, s in enumerate(shape[:3]) if i != axis]))


def crop_slices(array: np.ndarray, axis: int, max_slices: int | None, first_timepoint: bool = False) -> np.ndarray:
    """Central ``max_slices`` slices along ``axis`` (and only time point 0 if asked)."""
    a = array
    if first_timepoint and a.ndim > 3:
        a = a[(slice(None),) * 3 + (0,) * (a.ndim - 3)]
    if max_slices and a.ndim >= 3 and a.shape[axis] > max_slices:
        start = (a.shape[axis] - max_slices) // 2
        a = np.take(a, np.arange(start, start + max_slices), axis=axis)
    return np.ascontiguousarray(a)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process image only.
    (``ru_maxrss`` is not used there: it survives fork + exec, so a child started by a big
    parent reports the parent's peak.) Elsewhere: ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    import sys

    scale = 1.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def volume_name(path: Path) -> str:
    """A volume's file name without .nii.gz / .nii / .dcm."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


# --------------------------------------------------------------------------- rows


def result_row(volume: str, codec: str, array: np.ndarray, axis: int, **kw: Any) -> dict[str, Any]:
    """One result row (every :data:`CSV_FIELDS` key; unmeasured fields are "")."""
    row: dict[str, Any] = {k: "" for k in CSV_FIELDS}
    row.update(
        volume=volume, codec=codec, mode="lossy", shape="x".join(map(str, array.shape)), slice_axis=axis,
        num_slices=num_frames(array.shape, axis), voxels=int(array.size),
    )  # fmt: skip
    row.update(kw)
    return row


def load_medgpu(device: str = "cpu", weights: str | None = None, random_weights: bool = False,
                codec: VolumeCodec | None = None) -> MedgpuApi:
    """``(compress, decompress)`` of :mod:`medgpu.api` bound to a codec loaded once.

    ``weights`` uses another checkpoint; ``random_weights`` seeded random weights
    (plumbing only: the numbers mean nothing); ``codec`` an already loaded codec.
    Raises :class:`~medgpu.errors.InputError` when the shipped weights are missing.
    """
    from medgpu.api import compress, decompress, resolve_device

    if codec is None:
        from medgpu.codec import load_codec

        try:
            codec = load_codec(None, device=resolve_device(device), pretrained=not random_weights, weights=weights)
        except FileNotFoundError as exc:
            raise InputError(f"medgpu codec weights are not installed: {exc.filename or exc}") from None
    return functools.partial(compress, codec=codec), functools.partial(decompress, codec=codec)


def run_medgpu(
    api: MedgpuApi, name: str, src: str | os.PathLike[str] | Volume, original: np.ndarray, axis: int,
    qualities: Sequence[int], gop: int, device: str, work: Path, *, on_point: OnPoint | None = None,
    label: str = "medgpu",
) -> list[dict[str, Any]]:  # fmt: skip
    """medgpu points: real .mgpu bytes, PSNR and decode time measured here.

    ``label`` names the codec in the rows (e.g. ``medgpu-intra`` for a GoP of 1).

    ``src`` (file or Volume) must hold exactly the voxels of ``original``. Encode time is
    the report's ``encode_seconds`` (coding + writing the stream);
    ``compress_call_s_per_slice`` is the whole ``compress`` call (which also decodes the
    stream once to verify it). Decode time is the wall time of ``decompress`` (no file
    writing). The sidecar is not counted in the rate. A failing point gives a row whose
    ``notes`` start with "ERROR".
    """
    compress, decompress = api
    rows = []
    nf = num_frames(original.shape, axis)
    for q in qualities:
        mg = Path(work) / f"{name}_{label}_q{q}.mgpu"
        notes = []
        try:
            t0 = time.perf_counter()
            report = compress(src, mg, quality=int(q), gop=gop, slice_axis=axis, device=device, overwrite=True)
            t_call = time.perf_counter() - t0
            t_enc = float(report.get("encode_seconds", t_call))
            nbytes = os.path.getsize(mg)
            payload = packet_bytes(mg)
            t0 = time.perf_counter()
            dec = np.asarray(decompress(mg, None, device=device).array)
            t_dec = time.perf_counter() - t0
            if dec.shape != original.shape:
                raise ValueError(f"decoded shape {dec.shape} != original {original.shape}")
            p = psnr(original, dec)
            rep_psnr = float(report.get("psnr", float("nan")))
            if int(report.get("bytes", nbytes)) != nbytes:
                notes.append(f"report bytes {report.get('bytes')} != file {nbytes}")
            if math.isfinite(rep_psnr) and math.isfinite(p) and abs(rep_psnr - p) > 0.05:
                notes.append(f"report psnr {rep_psnr:.2f} != measured {p:.2f}")
            if dec.dtype != original.dtype:
                notes.append(f"decoded dtype {dec.dtype} != {original.dtype}")
            row = result_row(
                name, label, original, axis, param_name="quality", param=int(q), bytes=nbytes,
                bits_per_voxel=bits_per_voxel(nbytes, original.size), psnr=p, encode_s_per_slice=t_enc / nf,
                decode_s_per_slice=t_dec / nf, compress_call_s_per_slice=t_call / nf,
                report_bits_per_voxel=float(report.get("bits_per_voxel", float("nan"))), report_psnr=rep_psnr,
                payload_bytes=payload, notes="; ".join(notes),
            )  # fmt: skip
        except Exception as exc:  # one failing point must not end a long run
            log.debug("medgpu q=%s failed on %s", q, name, exc_info=True)
            row = result_row(name, label, original, axis, param_name="quality", param=int(q),
                             notes=f"ERROR {exc!r}")
        finally:
            for f in (mg, Path(str(mg) + ".json")):
                f.unlink(missing_ok=True)
        rows.append(row)
        if on_point:
            on_point(row)
    return rows


def packet_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the GoP packets of a ``.mgpu`` file (the codec's output, without the header that
    carries the source metadata, the packet records and the index)."""
    from medgpu.bitstream.container import ContainerReader

    with ContainerReader(path) as reader:
        return sum(e.length for e in reader.entries)


def packets_only_rows(rows: Sequence[Mapping[str, Any]], codec: str = "medgpu") -> list[dict[str, Any]]:
    """Copies of ``codec``'s rows rated by their packet bytes, as codec ``<codec>-packets``:
    the like-for-like rate against classical codestreams, which carry no metadata either."""
    out = []
    for r in rows:
        if r["codec"] == codec and r.get("payload_bytes") not in ("", None):
            out.append({**r, "codec": f"{codec}-packets", "bytes": r["payload_bytes"],
                        "bits_per_voxel": bits_per_voxel(int(r["payload_bytes"]), int(r["voxels"]))})
    return out


def run_baseline(
    codec: str, name: str, original: np.ndarray, axis: int, params: Iterable[float], *,
    mode: str = "lossy", on_point: OnPoint | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Classical-codec points on the same voxels (floats mapped to uint16 codes first).

    Bytes, encode and decode times come from :func:`medgpu.baselines.run_classical_detailed`,
    PSNR from the original array and the decoded one.
    """
    c = baselines.CLASSICAL_CODECS[codec]
    mapping = None
    if original.dtype.kind == "f":
        codes, mapping = baselines.to_uint16_codes(original)
    else:
        codes = original
    rows = []
    for p in params:
        try:
            r = baselines.run_classical_detailed(codec, codes, axis, p)
            dec = r.decoded if mapping is None else baselines.from_uint16_codes(r.decoded, mapping, original.dtype)
            notes = ["float mapped to uint16 codes"] if mapping is not None else []
            q = psnr(original, dec)
            if mode == "lossless" and math.isfinite(q):
                notes.append("not exactly lossless (range beyond the codec's bit depth)")
            row = result_row(
                name, codec, original, axis, mode=mode, param_name=c.param_name, param=p, bytes=r.nbytes,
                bits_per_voxel=bits_per_voxel(r.nbytes, original.size), psnr=q,
                encode_s_per_slice=r.encode_seconds / r.num_frames, decode_s_per_slice=r.decode_seconds / r.num_frames,
                notes="; ".join(notes),
            )  # fmt: skip
        except Exception as exc:
            log.debug("%s %s=%s failed on %s", codec, c.param_name, p, name, exc_info=True)
            row = result_row(name, codec, original, axis, mode=mode, param_name=c.param_name, param=p,
                             notes=f"ERROR {exc!r}")
        rows.append(row)
        if on_point:
            on_point(row)
    return rows


def run_lossless(codecs: Sequence[str], name: str, original: np.ndarray, axis: int, *,
                 on_point: OnPoint | None = None) -> list[dict[str, Any]]:
    """Lossless points (``mode="lossless"``) of the codecs in ``codecs`` that have a lossless mode."""
    rows = []
    for c in codecs:
        param = baselines.CLASSICAL_CODECS[c].lossless_param
        if param is not None:
            rows += run_baseline(c, name, original, axis, [param], mode="lossless", on_point=on_point)
    return rows


# --------------------------------------------------------------------------- BD metrics


def rd_points(rows: Sequence[Mapping[str, Any]], volume: str, codec: str) -> tuple[list[float], list[float]]:
    """(rates, psnrs) of one lossy curve: finite points, sorted by rate, PSNR strictly increasing.

    Points that do not improve PSNR over a cheaper point (saturated or dominated) and
    lossless rows are dropped so that the PCHIP fit of the BD metrics is well defined.
    """
    pts = []
    for r in rows:
        if r["volume"] != volume or r["codec"] != codec or r.get("mode", "lossy") == "lossless":
            continue
        try:
            rate, q = float(r["bits_per_voxel"]), float(r["psnr"])
        except (TypeError, ValueError):
            continue
        if math.isfinite(rate) and math.isfinite(q) and rate > 0:
            pts.append((rate, q))
    pts.sort()
    out: list[tuple[float, float]] = []
    for rate, q in pts:
        if not out or q > out[-1][1]:
            out.append((rate, q))
    return [p[0] for p in out], [p[1] for p in out]


def default_pairs(codecs: Sequence[str]) -> list[tuple[str, str]]:
    """BD pairs ``(test, reference)``: each medgpu variant against every classical codec
    (and the GoP-30 codec against the intra-only one), else all against the first."""
    ours = [c for c in codecs if c.startswith("medgpu")]
    if ours:
        pairs = [(m, c) for m in ours for c in codecs if not c.startswith("medgpu")]
        if "medgpu" in ours and "medgpu-intra" in ours:
            pairs.append(("medgpu", "medgpu-intra"))
        return pairs
    return [(c, codecs[0]) for c in codecs[1:]]


def bd_table(rows: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """BD-rate / BD-PSNR of ``test`` vs ``ref`` for every volume and pair, plus averages
    (rows with ``volume="**average**"``)."""
    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    out = []
    for test, ref in pairs:
        per = []
        for v in volumes:
            rr, pr = rd_points(rows, v, ref)
            rt, pt = rd_points(rows, v, test)
            entry: dict[str, Any] = dict(volume=v, test=test, ref=ref, bd_rate=float("nan"), bd_psnr=float("nan"),
                                         overlap_db="", points=f"{len(rt)}/{len(rr)}")
            if len(rr) >= 2 and len(rt) >= 2:
                entry["bd_rate"] = bd_rate(rr, pr, rt, pt)
                entry["bd_psnr"] = bd_psnr(rr, pr, rt, pt)
                lo, hi = max(min(pr), min(pt)), min(max(pr), max(pt))
                entry["overlap_db"] = f"{lo:.1f}-{hi:.1f}" if hi > lo else "none"
            per.append(entry)
            out.append(entry)
        fin_r = [e["bd_rate"] for e in per if math.isfinite(e["bd_rate"])]
        fin_p = [e["bd_psnr"] for e in per if math.isfinite(e["bd_psnr"])]
        out.append(dict(volume="**average**", test=test, ref=ref,
                        bd_rate=float(np.mean(fin_r)) if fin_r else float("nan"),
                        bd_psnr=float(np.mean(fin_p)) if fin_p else float("nan"),
                        overlap_db="", points=f"{len(fin_r)} volumes"))
    return out


# --------------------------------------------------------------------------- outputs


_STYLE: dict[str, dict[str, Any]] = {
    "medgpu": dict(color="tab:red", marker="o", lw=2.0),
    "jpeg2000": dict(color="tab:blue", marker="s", lw=1.3),
    "x265": dict(color="tab:green", marker="^", lw=1.3),
    "htj2k": dict(color="tab:cyan", marker="v", lw=1.0),
    "jpegxl": dict(color="tab:purple", marker="D", lw=1.0),
    "jpegls": dict(color="tab:brown", marker="x", lw=1.0),
    "av1": dict(color="tab:olive", marker="P", lw=1.0),
}


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def plot_rd_curves(rows: Sequence[Mapping[str, Any]], out_path: str | os.PathLike[str],
                   codecs: Sequence[str] | None = None, ncols: int = 3) -> Path:
    """One PSNR-vs-bits-per-voxel panel per volume (log rate axis) as PNG; returns its path.

    Lossless rows and non-finite points are left out. Uses matplotlib's Agg canvas
    directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    if codecs is None:
        codecs = list(dict.fromkeys(r["codec"] for r in rows))
    n = max(1, len(volumes))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, vol in zip(axes.flat, volumes, strict=False):
        for codec in codecs:
            pts = sorted(
                (float(r["bits_per_voxel"]), float(r["psnr"]))
                for r in rows
                if r["volume"] == vol and r["codec"] == codec and r.get("mode", "lossy") != "lossless"
                and _finite(r.get("psnr")) and _finite(r.get("bits_per_voxel")) and float(r["bits_per_voxel"]) > 0
            )
            if pts:
                style = _STYLE.get(codec, dict(marker=".", lw=1.0))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=codec, ms=4, **style)
        ax.set_xscale("log")
        ax.set_title(vol, fontsize=9)
        ax.set_xlabel("bits per voxel")
        ax.set_ylabel("PSNR [dB] (data range)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def json_safe(o: Any) -> Any:
    """``o`` with non-finite floats as None/"inf"/"-inf", numpy scalars as Python ones, Paths as str."""
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, Mapping):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.generic):
        return json_safe(o.item())
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return o


def write_csv_json(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], extra: Mapping[str, Any],
                   fields: Sequence[str] = CSV_FIELDS) -> tuple[Path, Path]:
    """``results.csv`` (one row per codec point) and ``results.json`` (rows + ``extra``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "results.csv", out / "results.json"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
    with open(json_path, "w") as f:
        json.dump(json_safe({**extra, "rows": list(rows)}), f, indent=1)
    return csv_path, json_path


# --------------------------------------------------------------------------- the benchmark


@dataclass
class BenchResult:
    """Everything one :func:`run_bench` measured and wrote."""

    rows: list[dict[str, Any]]
    bd: list[dict[str, Any]]
    meta: dict[str, Any]
    codecs: list[str]
    csv_path: Path
    json_path: Path
    plot_path: Path | None
    skipped: dict[str, str] = field(default_factory=dict)

    def lossy(self) -> list[dict[str, Any]]:
        """The RD points (lossless reference rows left out)."""
        return [r for r in self.rows if r.get("mode") != "lossless"]

    def lossless(self) -> list[dict[str, Any]]:
        """The lossless reference rows."""
        return [r for r in self.rows if r.get("mode") == "lossless"]


def _select_codecs(codecs: Sequence[str] | None) -> tuple[list[str], bool]:
    """(codec names in run order, whether the user named them)."""
    known = ["medgpu", *baselines.CLASSICAL_CODECS]
    if codecs is None:
        return known, False
    names = list(dict.fromkeys(c.strip().lower() for c in codecs if c.strip()))
    unknown = [c for c in names if c not in known]
    if unknown or not names:
        raise OptionError(f"unknown codec(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return names, True


def run_bench(
    volumes: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] = "medgpu-bench",
    *,
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    codecs: Sequence[str] | None = None,
    params: Mapping[str, Sequence[float]] | None = None,
    lossless: bool = True,
    gop: int = DEFAULT_GOP,
    slice_axis: int | None = None,
    max_slices: int | None = None,
    device: str = "auto",
    weights: str | None = None,
    random_weights: bool = False,
    codec: VolumeCodec | None = None,
    plot: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchResult:
    """Benchmark medgpu and classical codecs on ``volumes`` (NIfTI / DICOM paths).

    ``codecs`` (default: medgpu and every installed classical codec) picks the codecs; a
    codec named explicitly but unusable (weights or encoder missing) is an error, an
    implicit one is skipped (``result.skipped``). ``params`` overrides a classical
    codec's rate sweep (:func:`medgpu.baselines.sweep`). ``max_slices`` keeps that many
    central slices. ``progress(description, done, total)`` is called after every point.
    Writes ``results.csv``, ``results.json`` and ``rd_curves.png`` into ``out_dir``.
    """
    from medgpu.api import _read_volume, resolve_device
    from medgpu.convert import shift_affine
    from medgpu.volume import Volume

    names, explicit = _select_codecs(codecs)
    qualities = [int(q) for q in qualities]
    if not volumes:
        raise OptionError("no volumes to benchmark")
    if max_slices is not None and max_slices < 1:
        raise OptionError(f"max_slices must be positive, got {max_slices}")
    device = resolve_device(device)
    skipped: dict[str, str] = {}
    classical = []
    for c in names:
        if c == "medgpu":
            continue
        if baselines.CLASSICAL_CODECS[c].available():
            classical.append(c)
        elif explicit:
            raise InputError(f"codec {c} is not installed (its imagecodecs module or ffmpeg encoder is missing)")
        else:
            skipped[c] = "encoder not installed"
    api = None
    if "medgpu" in names:
        if not qualities:
            skipped["medgpu"] = "no qualities"
        else:
            try:
                api = load_medgpu(device, weights, random_weights, codec)
            except InputError as exc:
                if explicit:
                    raise
                skipped["medgpu"] = str(exc)
    run_codecs = (["medgpu"] if api is not None else []) + classical
    if not run_codecs:
        raise InputError("no codec left to run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    sweeps = {c: [float(p) for p in (params or {}).get(c, baselines.sweep(c))] for c in classical}
    n_lossless = sum(baselines.CLASSICAL_CODECS[c].lossless_param is not None for c in classical) if lossless else 0
    per_volume = (len(qualities) if api is not None else 0) + sum(len(s) for s in sweeps.values()) + n_lossless
    total, done = per_volume * len(volumes), 0

    def on_point(row: Mapping[str, Any]) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(f"{row['volume']} {row['codec']}", done, total)

    rows: list[dict[str, Any]] = []
    names_seen: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="medgpu_bench_") as td:
        for src in volumes:
            volume = _read_volume(src)
            name = volume_name(Path(src))
            names_seen[name] = names_seen.get(name, 0) + 1
            if names_seen[name] > 1:
                name = f"{name}#{names_seen[name]}"
            try:
                axis = volume.slice_axis(slice_axis)
            except ValueError as exc:
                raise OptionError(f"--slice-axis: {exc}") from None
            array = crop_slices(volume.array, axis, max_slices)
            if array.shape != volume.array.shape:
                start = (volume.array.shape[axis] - array.shape[axis]) // 2
                volume = Volume(array, shift_affine(volume.affine, axis, start), volume.spacing,
                                volume.source_format, volume.header, volume.path)
            if api is not None:
                rows += run_medgpu(api, name, volume, array, axis, qualities, gop, device, Path(td), on_point=on_point)
            for c in classical:
                rows += run_baseline(c, name, array, axis, sweeps[c], on_point=on_point)
            if lossless:
                rows += run_lossless(classical, name, array, axis, on_point=on_point)

    bd = bd_table(rows, default_pairs(run_codecs))
    out = Path(out_dir)
    plot_path = plot_rd_curves(rows, out / "rd_curves.png", run_codecs) if plot else None
    meta = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "volumes": [str(v) for v in volumes], "codecs": run_codecs, "skipped": skipped,
        "qualities": qualities if api is not None else [], "device": device, "gop": gop,
        "slice_axis": slice_axis, "max_slices": max_slices,
        "medgpu_weights": ("random (plumbing only, numbers meaningless)" if random_weights
                           else "given codec" if codec is not None else (weights or "shipped")),
        "codec_descriptions": {c: baselines.CLASSICAL_CODECS[c].description for c in classical},
        "codec_sweeps": sweeps,
        "psnr": "over the original data range (max - min)",
        "rate": "bits per voxel from the bytes written (medgpu: .mgpu file; classical: codestreams)",
    }  # fmt: skip
    csv_path, json_path = write_csv_json(rows, out, {"meta": meta, "bd": bd})
    return BenchResult(rows, bd, meta, run_codecs, csv_path, json_path, plot_path, skipped)


# --------------------------------------------------------------------------- terminal tables


def _fmt(x: Any, nd: int = 2, pct: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x) if x != "" else "-"
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:+.{nd}f} %" if pct else f"{v:.{nd}f}"


def render_tables(result: BenchResult) -> list[Table]:
    """Rich tables: RD points, BD metrics, lossless bits per voxel."""
    from rich.table import Table

    points = Table(title="Rate-distortion points (PSNR over the original data range)")
    for col, just in (("volume", "left"), ("codec", "left"), ("param", "left"), ("bits/voxel", "right"),
                      ("PSNR dB", "right"), ("enc ms/slice", "right"), ("dec ms/slice", "right"), ("notes", "left")):
        points.add_column(col, justify=just)  # type: ignore[arg-type]
    def ms(row: Mapping[str, Any], key: str) -> str:
        return _fmt(float(row[key]) * 1000, 1) if row.get(key, "") != "" else "-"

    for r in result.lossy():
        points.add_row(r["volume"], r["codec"], f"{r['param_name']}={r['param']:g}", _fmt(r["bits_per_voxel"], 3),
                       _fmt(r["psnr"]), ms(r, "encode_s_per_slice"), ms(r, "decode_s_per_slice"),
                       str(r.get("notes", ""))[:60])
    bd = Table(title="BD-rate (PCHIP; negative: the test codec needs fewer bits)")
    for col in ("test", "reference", "volume", "BD-rate", "BD-PSNR dB", "overlap dB", "points"):
        bd.add_column(col, justify="right" if col.startswith("BD") else "left")
    for e in result.bd:
        bd.add_row(e["test"], e["ref"], e["volume"].strip("*"), _fmt(e["bd_rate"], 1, pct=True),
                   _fmt(e["bd_psnr"]), e["overlap_db"] or "", e["points"])
    tables = [points, bd]
    if result.lossless():
        ll = Table(title="Lossless reference (classical codecs)")
        for col in ("volume", "codec", "bits/voxel", "PSNR dB", "notes"):
            ll.add_column(col, justify="right" if col in ("bits/voxel", "PSNR dB") else "left")
        for r in result.lossless():
            ll.add_row(r["volume"], r["codec"], _fmt(r["bits_per_voxel"], 3), _fmt(r["psnr"]),
                       str(r.get("notes", ""))[:60])
        tables.append(ll)
    return tables

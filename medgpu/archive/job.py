"""Archive jobs (:func:`archive`) and their reverse (:func:`restore`).

An archive is a folder::

    DEST/archive.sqlite        the ledger (see medgpu.archive.ledger for its consistency model)
    DEST/streams/nifti/...     one .mgpu + .mgpu.json per NIfTI file (path under the source root)
    DEST/streams/dicom/<study>/<series>.mgpu(.json)
    DEST/summary.json, DEST/summary.csv   written at the end of every run
    DEST/.lock                 held by the running job
    DEST/.work, DEST/.incoming temporary (staging, PACS retrievals); removed

A run: take the lock; check the coding options against the ledger's; recover rows of a dead
run; remove temporary files a killed run left; discover the series (folder tree, CSV
manifest, or PACS query) and add new ones as ``pending``; then run every pending series
of the archive through the runner -- claim (``running``), compress + verify in a worker,
record ``done`` / retry with exponential backoff (transient errors, dead workers; bounded)
/ ``skipped`` (unreadable input) / ``failed``; finally write the summary.
Re-running the same command resumes: done series are not redone, nothing is lost.
"""
from __future__ import annotations

import contextlib
import csv
import heapq
import io
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medgpu.archive.discover import Discovery, SeriesSource, discover, safe_name
from medgpu.archive.ledger import LEDGER_NAME, Ledger, acquire_lock
from medgpu.archive.pacs import PacsError, PacsNode, find_series, retrieve_series, store
from medgpu.archive.progress import JobProgress
from medgpu.archive.runners import Runner, default_workers, make_runner
from medgpu.archive.worker import CodecSpec, is_transient
from medgpu.errors import InputError, MedgpuError, OptionError, OutputError

__all__ = ["STREAMS", "archive", "restore", "summary_paths"]

STREAMS = "streams"
_WORK = ".work"
_INCOMING = ".incoming"
_SUMMARY_FIELDS = ("key", "state", "kind", "source", "stream", "bytes", "original_bytes", "ratio", "psnr",
                   "attempts", "seconds", "sha256", "error")


def summary_paths(dest: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``DEST/summary.json`` and ``DEST/summary.csv``."""
    return Path(dest) / "summary.json", Path(dest) / "summary.csv"


# ============================================================================ helpers


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _remove_temporaries(dest: Path) -> int:
    """Remove what a killed run may have left: ``.*.part`` files (streams, sidecars, summary),
    hidden ``.*.tmp`` folders, the staging folder and partial PACS retrievals."""
    removed = 0
    shutil.rmtree(dest / _WORK, ignore_errors=True)
    incoming = dest / _INCOMING
    if incoming.is_dir():
        for d in incoming.iterdir():
            if d.name.endswith(".partial"):
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
    for top, dirs, files in os.walk(dest):
        for name in files:
            if name.startswith(".") and name.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(top, name))
                    removed += 1
        for name in list(dirs):
            if name.startswith(".") and name.endswith(".tmp"):
                shutil.rmtree(os.path.join(top, name), ignore_errors=True)
                dirs.remove(name)
                removed += 1
    return removed


def _prepare_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"archive destination is not a folder: {dest}")
    try:
        (dest / STREAMS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {dest}: {exc.strerror or exc}") from None


def _stored_options(dest: Path) -> dict[str, Any]:
    """The coding options an existing archive in ``dest`` was started with ({} for a new one)."""
    if not (dest / LEDGER_NAME).is_file():
        return {}
    with Ledger(dest / LEDGER_NAME, readonly=True) as ledger:
        text = ledger.get_meta("options")
    return json.loads(text) if text else {}


def _check_int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise OptionError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _source_text(row: Mapping[str, Any]) -> str:
    src = row.get("source") or {}
    if row.get("kind") == "pacs":
        return f"pacs://{src.get('node', {}).get('host')}:{src.get('node', {}).get('port')}/{src.get('series_uid')}"
    paths = src.get("paths") or []
    if len(paths) == 1:
        return paths[0]
    if paths:
        return f"{os.path.commonpath([os.path.dirname(p) for p in paths])} ({len(paths)} files)"
    return ""


# ============================================================================ discovery


def _discover_pacs(node: PacsNode, query: Mapping[str, str]) -> Discovery:
    result = Discovery()
    for s in find_series(node, query):
        uid = s["SeriesInstanceUID"]
        count = s.get("NumberOfSeriesRelatedInstances") or ""
        result.series.append(SeriesSource(
            key=f"dicom:{uid}", kind="pacs",
            name=f"dicom/{safe_name(s['StudyInstanceUID'])}/{safe_name(uid)}.mgpu",
            source={"study_uid": s["StudyInstanceUID"], "series_uid": uid,
                    "expected": int(count) if count.isdigit() else None,
                    "node": {"host": node.host, "port": node.port, "aec": node.aec, "aet": node.aet,
                             "timeout": node.timeout}},
            fingerprint=f"pacs:{count}",
            info={"patient_id": s.get("PatientID", ""), "study_uid": s["StudyInstanceUID"],
                  "modality": s.get("Modality", ""), "description": s.get("SeriesDescription", "")},
        ))
    return result


# ============================================================================ archive


class _Job:
    def __init__(self, dest: Path, ledger: Ledger, runner: Runner, run_id: str, *, options: dict[str, Any],
                 codec: CodecSpec, threads: int | None, verify: bool, retries: int, backoff: float,
                 retrieve: str, move_port: int | None, progress: JobProgress | None) -> None:
        self.dest, self.ledger, self.runner, self.run_id = dest, ledger, runner, run_id
        self.options, self.codec, self.threads, self.verify = options, codec, threads, verify
        self.retries, self.backoff = retries, backoff
        self.retrieve, self.move_port = retrieve, move_port
        self.progress = progress
        self.stats = {"archived": 0, "skipped": 0, "failed": 0, "retries": 0}
        self.total = 0

    def _notify(self, message: str = "") -> None:
        if self.progress is not None:
            self.progress(self.ledger.counts(), self.total, message)

    def _task(self, row: Mapping[str, Any], paths: Sequence[str] | None = None) -> dict[str, Any]:
        source = dict(row["source"])
        kind = row["kind"]
        if kind == "pacs":
            source, kind = {"paths": list(paths or []), "series_uid": row["source"]["series_uid"]}, "dicom"
        return {
            "key": row["key"], "kind": kind, "source": source,
            "stream": str(self.dest / row["name"]), "work_dir": str(self.dest / _WORK),
            "options": self.options, "codec": self.codec.to_dict(), "threads": self.threads, "verify": self.verify,
        }

    def _retrieve(self, row: Mapping[str, Any]) -> list[str]:
        """Pull a PACS series into DEST/.incoming/<series> (kept until the series is finished)."""
        src = row["source"]
        final = self.dest / _INCOMING / safe_name(src["series_uid"])
        if final.is_dir() and any(final.iterdir()):
            return sorted(str(p) for p in final.iterdir() if not p.name.startswith("."))
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        n = src["node"]
        node = PacsNode(n["host"], int(n["port"]), n["aec"], n["aet"], float(n.get("timeout", 30.0)))
        files = retrieve_series(node, src["study_uid"], src["series_uid"], partial, method=self.retrieve,
                                move_port=self.move_port, expected=src.get("expected"))
        os.replace(partial, final)
        return [str(final / p.name) for p in files]

    def _release_incoming(self, row: Mapping[str, Any]) -> None:
        if row["kind"] == "pacs":
            shutil.rmtree(self.dest / _INCOMING / safe_name(row["source"]["series_uid"]), ignore_errors=True)

    def run(self) -> None:
        rows = {r["key"]: r for r in self.ledger.rows("pending")}
        queue = sorted(rows)
        queue.reverse()  # pop() from the end: keys in order
        delayed: list[tuple[float, str]] = []
        inflight: dict[str, int] = {}  # key -> attempt
        self._notify("start")
        while queue or delayed or inflight:
            now = time.monotonic()
            while delayed and delayed[0][0] <= now:
                queue.append(heapq.heappop(delayed)[1])
            while queue and len(inflight) < self.runner.slots:
                key = queue.pop()
                attempt = self.ledger.claim(self.run_id, key)
                row = rows[key]
                if attempt > self.retries + 2:  # started again and again, never finished: it kills its job?
                    self._finish(key, attempt, {"status": "error", "error_kind": "permanent",
                                                "error": f"started {attempt - 1} times without a result "
                                                         f"(interrupted runs)"}, delayed)
                    continue
                try:
                    paths = self._retrieve(row) if row["kind"] == "pacs" else None
                except Exception as exc:
                    self._finish(key, attempt, {"status": "error", "error": str(exc),
                                                "error_kind": "transient" if isinstance(exc, PacsError) or is_transient(exc)
                                                else "permanent"}, delayed)
                    continue
                inflight[key] = attempt
                self.runner.submit(key, self._task(row, paths))
                self._notify()
            if not inflight:
                if delayed:
                    time.sleep(max(0.0, min(delayed[0][0] - time.monotonic(), 1.0)))
                continue
            wait = 0.5 if not delayed else max(0.01, min(0.5, delayed[0][0] - time.monotonic()))
            for key, outcome in self.runner.results(wait):
                attempt = inflight.pop(key)
                self._finish(key, attempt, outcome, delayed)

    def _finish(self, key: str, attempt: int, outcome: Any, delayed: list[tuple[float, str]]) -> None:
        row = self.ledger.row(key) or {"kind": "", "source": {}}
        if isinstance(outcome, BaseException):
            outcome = {"status": "error", "error_kind": "transient",
                       "error": f"worker lost: {type(outcome).__name__}: {str(outcome).strip()[:200]}"}
        if outcome.get("status") == "done":
            self.ledger.mark_done(self.run_id, key, outcome)
            self.stats["archived"] += 1
            self._release_incoming(row)
            self._notify(f"done {key}")
            return
        kind, error = outcome.get("error_kind", "permanent"), str(outcome.get("error") or "unknown error")
        if kind == "transient" and attempt <= self.retries:
            self.ledger.mark_retry(self.run_id, key, error)
            self.stats["retries"] += 1
            delay = min(60.0, self.backoff * 2 ** (attempt - 1))
            heapq.heappush(delayed, (time.monotonic() + delay, key))
            self._notify(f"retry {key} in {delay:.1f} s: {error}")
            return
        if kind == "transient":
            error = f"{error} (after {attempt} attempts)"
        skipped = kind == "input"
        self.ledger.mark_failed(self.run_id, key, error, skipped=skipped)
        self.stats["skipped" if skipped else "failed"] += 1
        self._release_incoming(row)
        self._notify(f"{'skipped' if skipped else 'failed'} {key}: {error}")


def archive(
    src: str | os.PathLike[str] | None,
    dest: str | os.PathLike[str],
    *,
    pacs: PacsNode | None = None,
    query: Mapping[str, str] | None = None,
    retrieve: str = "get",
    move_port: int | None = None,
    quality: int | None = None,
    gop: int | None = None,
    slice_axis: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    threads: int | None = None,
    dask: bool = False,
    scheduler: str | None = None,
    retries: int = 2,
    backoff: float = 1.0,
    codec: CodecSpec | None = None,
    verify: bool = True,
    progress: JobProgress | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Archive every series of ``src`` (folder tree or CSV manifest) or of a PACS query into ``dest``.

    Args:
        src: folder (walked recursively), ``.csv`` manifest of paths, or one file; None with ``pacs``.
        dest: the archive folder (created); re-running on it resumes.
        pacs, query, retrieve, move_port: query ``pacs`` (C-FIND with ``query``, e.g.
            ``{"PatientID": "123"}``) and retrieve each series with C-GET (``retrieve="get"``)
            or C-MOVE to our AE title listening on ``move_port``.
        quality, gop, slice_axis, device: as for :func:`medgpu.api.compress`.
        workers: local worker processes (default: one per core, at most 8); 0 runs in this
            process. With ``dask``/``scheduler`` it is the LocalCluster size.
        threads: torch threads per task (default: cores / workers, 1 on Dask).
        dask, scheduler: run on Dask -- a LocalCluster, or the scheduler at ``scheduler``.
        retries, backoff: transient failures are retried ``retries`` times, waiting
            ``backoff * 2**(attempt-1)`` seconds (at most 60).
        codec: which codec/weights (default: the shipped ones).
        verify: decode every written stream before marking it done (default True).
        progress: ``progress(counts, total, message)`` callback.
        runner: a ready :class:`~medgpu.archive.runners.Runner` (overrides workers/dask).

    Returns:
        The summary, also written to ``DEST/summary.json`` and ``DEST/summary.csv``.
    """
    from medgpu import api

    if (src is None) == (pacs is None):
        raise OptionError("give either a source folder/manifest or a PACS node, not both" if src is not None
                          else "nothing to archive: give a source folder/manifest or a PACS node")
    if query and pacs is None:
        raise OptionError("--query needs --from-pacs")
    if retrieve not in ("get", "move"):
        raise OptionError(f"--retrieve must be get or move, got {retrieve!r}")
    retries = _check_int("--retries", retries, 0)
    if not (isinstance(backoff, (int, float)) and math.isfinite(backoff) and backoff >= 0):
        raise OptionError(f"backoff must be a non-negative number of seconds, got {backoff!r}")
    if workers is not None:
        _check_int("--workers", workers, 0)
    if threads is not None:
        _check_int("--threads", threads, 1)
    gop = _check_int("--gop", api.DEFAULT_GOP if gop is None else gop, 1)
    if slice_axis is not None:
        _check_int("--slice-axis", slice_axis, 0)
    if src is not None and not Path(src).exists():
        raise InputError(f"no such file or folder: {src}")
    dest = Path(dest).absolute()
    codec = codec or CodecSpec()
    resolved_device = api.resolve_device(device)
    loaded = codec.load("cpu")
    if quality is None:  # resuming: the archive's own quality (the default may have changed since)
        quality = _stored_options(dest).get("quality", api.DEFAULT_QUALITY)
    if not isinstance(quality, int) or isinstance(quality, bool) or not 0 <= quality < loaded.num_qualities:
        raise OptionError(f"--quality must be an integer in 0..{loaded.num_qualities - 1}, got {quality!r}")
    options = {"codec_id": loaded.codec_id, "weights_sha256": bytes(loaded.weights_hash).hex(),
               "quality": quality, "gop": gop, "slice_axis": slice_axis}
    _prepare_dest(dest)
    started = time.time()
    with acquire_lock(dest), Ledger(dest / LEDGER_NAME) as ledger:
        ledger.check_options(options)
        ledger.set_meta("codec", json.dumps(codec.to_dict()))
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        recovered = ledger.begin_run(run_id, dest)
        status, own_runner = "interrupted", runner is None
        try:
            recovered["temporaries_removed"] = _remove_temporaries(dest)
            if pacs is not None:
                found = _discover_pacs(pacs, dict(query or {}))
            else:
                found = discover(src, skip=[dest])  # type: ignore[arg-type]
            for s in found.series:
                ledger.upsert(run_id, s.key, s.kind, s.source, f"{STREAMS}/{s.name}", s.fingerprint, s.info)
            for u in found.unreadable:
                ledger.add_unreadable(run_id, u.key, u.path, u.reason, u.fingerprint)
            if runner is None:
                runner = make_runner(workers, dask=dask, scheduler=scheduler)
            if threads is None:
                threads = 1 if (dask or scheduler) else (
                    None if workers == 0 else max(1, (os.cpu_count() or 1) // (workers or default_workers())))
            task_options = {"quality": quality, "gop": gop, "slice_axis": slice_axis,
                            "device": device if (dask or scheduler) else resolved_device}
            job = _Job(dest, ledger, runner, run_id, options=task_options, codec=codec, threads=threads,
                       verify=verify, retries=retries, backoff=float(backoff), retrieve=retrieve,
                       move_port=move_port, progress=progress)
            job.total = sum(ledger.counts().values())
            job.run()
            status = "finished"
        finally:
            if own_runner and runner is not None:
                runner.close(abort=status != "finished")
            ledger.end_run(run_id, status)
        _remove_temporaries(dest)
        with contextlib.suppress(OSError):
            (dest / _INCOMING).rmdir()
        summary = _summary(dest, ledger, run_id, started, runner.description, options, recovered, job.stats,
                           found.ignored)
        _write_summary(dest, summary)
    return summary


def _summary(dest: Path, ledger: Ledger, run_id: str, started: float, runner: str, options: Mapping[str, Any],
             recovered: Mapping[str, int], stats: Mapping[str, int], ignored: int) -> dict[str, Any]:
    rows = ledger.rows()
    counts = ledger.counts()
    done = [r for r in rows if r["state"] == "done"]
    original = sum(int(r["original_bytes"] or 0) for r in done)
    stream = sum(int(r["bytes"] or 0) for r in done)
    psnrs = [float(r["psnr"]) for r in done if r["psnr"] is not None]
    finite = [p for p in psnrs if math.isfinite(p)]
    series = [{
        "key": r["key"], "state": r["state"], "kind": r["kind"], "source": _source_text(r),
        "stream": r["name"] if r["state"] == "done" else None, "bytes": r["bytes"],
        "original_bytes": r["original_bytes"], "ratio": r["ratio"], "psnr": r["psnr"], "attempts": r["attempts"],
        "seconds": r["seconds"], "sha256": r["sha256"], "error": r["error"],
    } for r in rows]
    return {
        "archive": str(dest),
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "runner": runner,
        "options": dict(options),
        "recovered": dict(recovered),
        "counts": {"series": len(rows), **counts},
        "this_run": dict(stats),
        "ignored_files": ignored,
        "original_bytes": original,
        "stream_bytes": stream,
        "total_ratio": (original / stream) if stream else None,
        "psnr_min": min(psnrs) if psnrs else None,
        "psnr_mean": (sum(finite) / len(finite)) if finite else (math.inf if psnrs else None),
        "problems": [{k: s[k] for k in ("key", "state", "source", "error")}
                     for s in series if s["state"] in ("skipped", "failed", "pending")],
        "series": series,
    }


def _write_summary(dest: Path, summary: Mapping[str, Any]) -> None:
    from medgpu.bitstream.sidecar import to_json_safe

    json_path, csv_path = summary_paths(dest)
    _atomic_write(json_path, json.dumps(to_json_safe(summary), indent=2, allow_nan=False) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for s in summary["series"]:
        writer.writerow({k: ("" if s.get(k) is None else s.get(k)) for k in _SUMMARY_FIELDS})
    _atomic_write(csv_path, buf.getvalue())


# ============================================================================ restore


def _select(rows: Iterable[dict[str, Any]], selectors: Sequence[str] | None) -> list[dict[str, Any]]:
    rows = list(rows)
    if not selectors:
        return rows
    out, unknown = [], []
    for sel in selectors:
        matches = [r for r in rows if sel in (r["key"], r["key"].split(":", 1)[-1], r["name"],
                                              r["name"].removesuffix(".mgpu"), f"{STREAMS}/{sel}")]
        if not matches:
            unknown.append(sel)
        out.extend(m for m in matches if m not in out)
    if unknown:
        raise OptionError(f"no archived series matches {', '.join(unknown)}")
    return out


def restore(
    archive_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    to: str = "nifti",
    pacs: PacsNode | None = None,
    series: Sequence[str] | None = None,
    overwrite: bool = False,
    device: str = "auto",
    codec: CodecSpec | None = None,
    progress: JobProgress | None = None,
) -> dict[str, Any]:
    """Decode the archived series of ``archive_dir`` to ``out`` (NIfTI or DICOM) or to a PACS.

    * ``to="nifti"``: ``OUT/<name>.nii.gz``; ``to="dicom"``: a new series in ``OUT/<name>/``
      written by :func:`medgpu.api.decompress` (Lossy Image Compression "01", ratio =
      original bytes / stream bytes, method "MEDGPU", Image Type DERIVED); ``pacs``: that
      DICOM series is sent with C-STORE (``out`` unused).
    * ``series`` selects by key (``dicom:<SeriesUID>``, ``file:<path>``), UID/path, or stream name.
    * Existing outputs are left alone (reported) unless ``overwrite``. Outputs are atomic.
    * ``codec`` defaults to the one the archive was written with.

    Returns ``{"restored": [...], "exists": [...], "failed": [...]}``; a failure of one series
    does not stop the others.
    """
    from medgpu import api

    root = Path(archive_dir)
    if to not in ("nifti", "dicom"):
        raise OptionError(f"--to must be nifti or dicom, got {to!r}")
    if pacs is None and out is None:
        raise OptionError("restore needs an output folder (or --to-pacs)")
    target_root = Path(out) if out is not None else None
    with Ledger(root / LEDGER_NAME, readonly=True) as ledger:
        rows = _select(ledger.rows("done"), series)
        stored_codec = ledger.get_meta("codec")
    if codec is None:
        codec = CodecSpec.from_dict(json.loads(stored_codec)) if stored_codec else CodecSpec()
    resolved = api.resolve_device(device)
    loaded = codec.load(resolved)
    if target_root is not None:
        try:
            target_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {target_root}: {exc.strerror or exc}") from None
    result: dict[str, list[dict[str, Any]]] = {"restored": [], "exists": [], "failed": []}
    counts = {"done": 0, "skipped": 0, "failed": 0, "running": 0}
    for row in rows:
        stream = root / row["name"]
        stem = row["name"].removeprefix(f"{STREAMS}/").removesuffix(".mgpu")
        entry: dict[str, Any] = {"key": row["key"], "stream": str(stream)}
        try:
            if pacs is None and to == "nifti":
                target = target_root / f"{stem}.nii.gz"  # type: ignore[operator]
                entry["output"] = str(target)
                if target.exists() and not overwrite:
                    result["exists"].append(entry)
                    counts["skipped"] += 1
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name[:-7]}.{uuid.uuid4().hex[:8]}.part.nii.gz")
                try:
                    api.decompress(stream, tmp, device=resolved, codec=loaded)
                    os.replace(tmp, target)
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            else:  # api.decompress labels the series lossy (ratio, method, derivation) for both
                if pacs is None:
                    target = target_root / stem  # type: ignore[operator]
                    entry["output"] = str(target)
                    if target.exists() and any(target.iterdir()) and not overwrite:
                        result["exists"].append(entry)
                        counts["skipped"] += 1
                        continue
                    api.decompress(stream, target, to="dicom", device=resolved, codec=loaded, overwrite=overwrite)
                    files = sorted(target.glob("*.dcm"))
                else:
                    import tempfile

                    with tempfile.TemporaryDirectory(prefix="medgpu-restore-") as tmpdir:
                        series_dir = Path(tmpdir) / "series"
                        api.decompress(stream, series_dir, to="dicom", device=resolved, codec=loaded)
                        files = sorted(series_dir.glob("*.dcm"))
                        entry["series_uid"] = _series_uid(files[0])
                        entry["stored"] = store(pacs, files)
                        entry["output"] = f"pacs://{pacs.host}:{pacs.port}"
                entry["files"] = len(files)
                if "series_uid" not in entry:
                    entry["series_uid"] = _series_uid(files[0])
            result["restored"].append(entry)
            counts["done"] += 1
        except (MedgpuError, OSError, ValueError) as exc:
            entry["error"] = str(exc) if isinstance(exc, MedgpuError) else f"{type(exc).__name__}: {exc}"
            result["failed"].append(entry)
            counts["failed"] += 1
        if progress is not None:
            progress(counts, len(rows), "")
    return result


def _series_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)

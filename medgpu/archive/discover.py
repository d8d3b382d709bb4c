"""Find the series an archive job codes: in a folder tree, in a manifest (CSV of paths).

* A NIfTI file (``.nii``/``.nii.gz``) is one series, keyed by its absolute path.
* DICOM files (Part-10, ``DICM`` preamble) are grouped by Series Instance UID *across the
  whole tree* (a series split over several folders is one series), keyed ``dicom:<UID>``.
  DICOMDIRs and instances without pixels (reports, presentation states) are ignored.
* A ``.dcm`` file that is not Part-10 DICOM, or a DICOM file pydicom cannot parse, is
  *unreadable*: it is reported, never guessed at. A NIfTI that cannot be decoded is found
  out by the worker and reported the same way. Other files are ignored.
* Hidden files and folders (``.name``) and the archive's own folder are skipped; symlinked
  folders are not followed. Everything is sorted, so discovery is deterministic.

Each series gets an output name relative to the archive: ``nifti/<path under the root>.mgpu``
or ``dicom/<StudyUID>/<SeriesUID>.mgpu``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgpu.errors import InputError

__all__ = ["Discovery", "SeriesSource", "Unreadable", "discover", "discover_paths", "read_manifest", "safe_name"]

_NIFTI = (".nii.gz", ".nii")
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SeriesSource:
    """One series to archive."""

    key: str
    kind: str  # "nifti", "dicom" or "pacs"
    name: str  # stream path relative to the archive, ending in .mgpu
    source: dict[str, Any]  # "paths" (files), "series_uid"; for PACS "study_uid", "series_uid", "node"
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Unreadable:
    """An input that cannot be read (reported, skipped)."""

    key: str
    path: str
    reason: str
    fingerprint: str


@dataclass
class Discovery:
    series: list[SeriesSource] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    ignored: int = 0


def safe_name(text: str, limit: int = 120) -> str:
    """A file-name-safe version of ``text`` (never empty, never ``.``/``..``)."""
    out = _UNSAFE.sub("_", str(text)).strip("._")[:limit]
    return out or "unnamed"


def _file_fingerprint(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:32]


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(_NIFTI)


def _nifti_stem(rel: str) -> str:
    low = rel.lower()
    for suffix in _NIFTI:
        if low.endswith(suffix):
            return rel[: -len(suffix)]
    return rel


def _walk(root: Path, skip: Sequence[Path]) -> Iterable[Path]:
    skip_real = {os.path.realpath(s) for s in skip}
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(top, d)) not in skip_real)
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(top) / name


class _Collector:
    """Accumulates NIfTI files and DICOM instances (grouped by series) from several roots."""

    def __init__(self) -> None:
        self.result = Discovery()
        self.dicom: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.seen: set[str] = set()

    def add_file(self, path: Path, root: Path | None) -> None:
        real = os.path.realpath(path)
        if real in self.seen:
            return
        self.seen.add(real)
        name = path.name
        if _is_nifti(name):
            rel = os.path.relpath(path, root) if root is not None else name
            parts = [safe_name(p) for p in Path(_nifti_stem(rel)).parts if p not in ("..", ".")]
            self.result.series.append(SeriesSource(
                key=f"file:{os.path.abspath(path)}", kind="nifti",
                name="nifti/" + "/".join(parts or ["unnamed"]) + ".mgpu",
                source={"paths": [os.path.abspath(path)]},
                fingerprint=_file_fingerprint([os.path.abspath(path)]),
                info={"source": str(path)},
            ))
            return
        from medgpu.io.dicom import is_dicom_file

        is_dicom = is_dicom_file(path)
        if not is_dicom:
            if name.lower().endswith(".dcm"):
                self._unreadable(path, "not a DICOM Part-10 file (no DICM preamble)")
            else:
                self.result.ignored += 1
            return
        try:
            header = _dicom_header(path)
        except Exception as exc:  # pydicom raises many kinds for damaged files
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self._unreadable(path, f"unreadable DICOM: {reason}")
            return
        if header is None:
            self.result.ignored += 1
            return
        self.dicom.setdefault(header["series_uid"], []).append((os.path.abspath(path), header))

    def _unreadable(self, path: Path, reason: str) -> None:
        p = os.path.abspath(path)
        self.result.unreadable.append(Unreadable(f"file:{p}", p, reason, _file_fingerprint([p])))

    def finish(self) -> Discovery:
        for uid in sorted(self.dicom):
            items = sorted(self.dicom[uid])
            first = items[0][1]
            paths = [p for p, _ in items]
            self.result.series.append(SeriesSource(
                key=f"dicom:{uid}", kind="dicom",
                name=f"dicom/{safe_name(first['study_uid'] or 'no-study')}/{safe_name(uid)}.mgpu",
                source={"paths": paths, "series_uid": uid},
                fingerprint=_file_fingerprint(paths),
                info={k: first[k] for k in ("patient_id", "study_uid", "modality", "description")}
                | {"files": len(paths), "folders": sorted({os.path.dirname(p) for p in paths})},
            ))
        self.result.series.sort(key=lambda s: s.key)
        self.result.unreadable.sort(key=lambda u: u.key)
        return self.result


def _dicom_header(path: Path) -> dict[str, Any] | None:
    """Series identity of a DICOM file, or None when it holds no image."""
    import warnings

    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(path, defer_size="1 KB")
    for w in caught:  # pydicom reads a cut file with a warning; here that is a damaged input
        if "end of file" in str(w.message).lower():
            raise ValueError("the file is truncated")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPClassUID") == _DICOMDIR_CLASS:
        return None
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if "Rows" in ds and "Columns" in ds and not has_pixels:
        raise ValueError("image attributes but no pixel data (the file is cut short?)")
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        return None  # not an image (report, presentation state, ...)
    _check_pixel_length(ds, path)
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        uid = "no-series-uid-" + hashlib.sha1(os.path.dirname(os.path.abspath(path)).encode()).hexdigest()[:12]
    return {
        "series_uid": uid,
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "patient_id": str(ds.get("PatientID", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "description": str(ds.get("SeriesDescription", "") or ""),
    }


def _check_pixel_length(ds: Any, path: Path) -> None:
    """Pixel data that runs past the end of the file, or native (uncompressed) pixel data
    shorter than Rows x Columns x frames x samples x bits: the file was cut."""
    elem = ds.get_item("PixelData")
    length = getattr(elem, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return
    value, tell = getattr(elem, "value", None), getattr(elem, "value_tell", None)
    if (value is not None and len(value) < length) or (
            value is None and tell is not None and tell + length > os.path.getsize(path)):
        raise ValueError("pixel data is cut short (the file ends early)")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or syntax.is_compressed:
        return
    try:
        bits = int(ds.get("BitsAllocated", 16))
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
                    * int(ds.get("SamplesPerPixel", 1)) * bits + 7) // 8
    except (TypeError, ValueError):
        return
    if length < expected:
        raise ValueError(f"pixel data is cut short ({length} of {expected} bytes)")


def read_manifest(path: str | os.PathLike[str]) -> list[Path]:
    """Paths listed in a CSV manifest: the ``path`` column (or the first column when there is no
    header row naming ``path``). Relative paths are relative to the manifest's folder; empty
    lines and lines starting with ``#`` are ignored."""
    manifest = Path(path)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and r[0].strip() and not r[0].lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read manifest {manifest}: {exc}") from None
    column = 0
    if rows and any(c.strip().lower() == "path" for c in rows[0]):
        column = [c.strip().lower() for c in rows[0]].index("path")
        rows = rows[1:]
    out = []
    for r in rows:
        if column < len(r) and r[column].strip():
            p = Path(r[column].strip()).expanduser()
            out.append(p if p.is_absolute() else manifest.parent / p)
    return out


def discover_paths(paths: Sequence[str | os.PathLike[str]], *, skip: Sequence[Path] = (),
                   base: Path | None = None) -> Discovery:
    """Discover series in files and folders; a folder is walked recursively.

    NIfTI names are relative to the folder they were found under, or to ``base`` for files
    given directly (else just the file name).
    """
    collector = _Collector()
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            for f in _walk(p, skip):
                collector.add_file(f, p)
        elif p.is_file():
            root = base if base is not None and os.path.abspath(p).startswith(os.path.abspath(base) + os.sep) else None
            collector.add_file(p, root)
        else:
            a = os.path.abspath(p)
            collector.result.unreadable.append(Unreadable(f"file:{a}", a, "no such file or folder", "missing"))
    return collector.finish()


def discover(src: str | os.PathLike[str], *, skip: Sequence[Path] = ()) -> Discovery:
    """Series under ``src``: a folder tree, a CSV manifest (``.csv``), or one file."""
    p = Path(src)
    if not p.exists():
        raise InputError(f"no such file or folder: {p}")
    if p.is_file() and p.suffix.lower() == ".csv":
        return discover_paths(read_manifest(p), skip=skip, base=p.parent)
    return discover_paths([p], skip=skip)

"""A small but real DICOM node for tests: a pynetdicom SCP on loopback, backed by a folder.

Services: Verification, Storage (every storage SOP class pynetdicom knows, any transfer
syntax), Study Root and Patient Root Query/Retrieve -- C-FIND (STUDY / SERIES / IMAGE
levels, single-value, wildcard ``*``/``?`` and UID-list matching), C-GET and C-MOVE (to
the AE titles in ``known_aes``). Files received by C-STORE are written to the folder;
files already in the folder are served. Free port (the OS picks), bounded timeouts, and
the server is shut down when the context manager exits::

    with DicomServer(folder, known_aes={"MEDGPU": ("127.0.0.1", port)}) as server:
        server.port, server.ae_title
"""
from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

LEVEL_KEYS = {
    "PATIENT": ("PatientID", "PatientName"),
    "STUDY": ("StudyInstanceUID", "StudyDate", "AccessionNumber", "StudyID", "StudyDescription"),
    "SERIES": ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"),
    "IMAGE": ("SOPInstanceUID", "InstanceNumber", "SOPClassUID"),
}
_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
           "IMAGE": "SOPInstanceUID"}


def _matches(value: Any, pattern: Any) -> bool:
    if pattern is None or str(pattern) == "":
        return True  # universal match
    text = "" if value is None else str(value)
    if isinstance(pattern, (list, tuple)) or "\\" in str(pattern):  # UID list matching
        items = list(pattern) if isinstance(pattern, (list, tuple)) else str(pattern).split("\\")
        return text in [str(p) for p in items]
    pattern = str(pattern)
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(text, pattern)
    return text == pattern


class DicomServer:
    """Query/Retrieve + Storage SCP on 127.0.0.1 (see the module doc)."""

    def __init__(self, folder: str | Path, *, ae_title: str = "TESTPACS",
                 known_aes: Mapping[str, tuple[str, int]] | None = None, timeout: float = 10.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.known_aes = dict(known_aes or {})
        self.timeout = timeout
        self.received: list[Path] = []
        self.requests: list[str] = []  # "C-FIND STUDY", "C-GET SERIES", ...
        self._lock = threading.Lock()
        self._server: Any = None

    # ------------------------------------------------------------------ storage

    def instances(self) -> list[tuple[Path, Dataset]]:
        """Every stored instance (header only) with its file."""
        out = []
        with self._lock:
            files = sorted(p for p in self.folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        for f in files:
            try:
                out.append((f, pydicom.dcmread(f, stop_before_pixels=True)))
            except Exception:
                continue
        return out

    def _on_store(self, event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        path = self.folder / f"{sop}.dcm"
        tmp = self.folder / f".{sop}.part"
        with self._lock:
            tmp.write_bytes(event.encoded_dataset())
            tmp.replace(path)
            self.received.append(path)
        return 0x0000

    # ------------------------------------------------------------------ query / retrieve

    def _select(self, identifier: Dataset) -> tuple[str, list[tuple[Path, Dataset]]]:
        level = str(identifier.get("QueryRetrieveLevel", "")).upper()
        if level not in _ORDER:
            raise ValueError(f"bad QueryRetrieveLevel {level!r}")
        selected = []
        for path, ds in self.instances():
            ok = True
            for elem in identifier:
                if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or elem.VR == "SQ":
                    continue
                if elem.value is None or str(elem.value) == "":
                    continue  # universal match / return key
                if elem.keyword not in ds or not _matches(ds.get(elem.keyword), elem.value):
                    ok = False
                    break
            if ok:
                selected.append((path, ds))
        return level, selected

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        try:
            level, selected = self._select(identifier)
        except ValueError:
            yield 0xC000, None
            return
        self.requests.append(f"C-FIND {level}")
        seen: dict[str, list[Dataset]] = {}
        for _path, ds in selected:
            seen.setdefault(str(ds.get(_UNIQUE[level], "")), []).append(ds)
        for uid in sorted(seen):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            group = seen[uid]
            ds = group[0]
            rsp = Dataset()
            rsp.QueryRetrieveLevel = level
            for elem in identifier:
                if elem.keyword and elem.keyword != "QueryRetrieveLevel":
                    setattr(rsp, elem.keyword, ds.get(elem.keyword, ""))
            for lvl in _ORDER[: _ORDER.index(level) + 1]:
                key = _UNIQUE[lvl]
                if key in identifier or lvl == level:
                    setattr(rsp, key, ds.get(key, ""))
            if "NumberOfSeriesRelatedInstances" in identifier and level == "SERIES":
                rsp.NumberOfSeriesRelatedInstances = len(group)
            if "NumberOfStudyRelatedInstances" in identifier and level == "STUDY":
                rsp.NumberOfStudyRelatedInstances = len(group)
            yield 0xFF00, rsp

    def _retrieve(self, event: Any, op: str) -> Iterator[Any]:
        try:
            level, selected = self._select(event.identifier)
        except ValueError:
            yield 0xC000, None
            return
        self.requests.append(f"{op} {level}")
        yield len(selected)
        for path, _ in selected:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, pydicom.dcmread(path)

    def _on_get(self, event: Any) -> Iterator[Any]:
        yield from self._retrieve(event, "C-GET")

    def _on_move(self, event: Any) -> Iterator[Any]:
        destination = self.known_aes.get(event.move_destination)
        if destination is None:
            yield None, None
            return
        yield destination[0], destination[1]
        yield from self._retrieve(event, "C-MOVE")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DicomServer:
        ae = AE(ae_title=self.ae_title)
        for t in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, t, self.timeout)
        ae.maximum_associations = 8
        ae.add_supported_context(Verification)
        for model in (StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind,
                      StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet,
                      StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove):
            ae.add_supported_context(model)
        for cx in StoragePresentationContexts:
            # scu_role/scp_role: accept a C-GET peer's role selection (it stores what we send)
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        ae.requested_contexts = StoragePresentationContexts  # for C-MOVE sub-associations
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find),
                    (evt.EVT_C_GET, self._on_get), (evt.EVT_C_MOVE, self._on_move)]
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        return self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> DicomServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

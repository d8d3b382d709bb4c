"""A small DICOM network client (pynetdicom): C-FIND, C-GET / C-MOVE, C-STORE, C-ECHO.

Study Root Query/Retrieve: :func:`find_series` asks for the studies that match a query
(C-FIND, STUDY level) and then for their series (SERIES level); :func:`retrieve_series`
pulls one series into a folder with C-GET (over the same association: no port to open)
or C-MOVE (the node sends to our AE title, which it must know as ``aet`` at
``host:move_port``; we listen on ``move_port`` for the duration of the move);
:func:`store` sends files with C-STORE. Every association has bounded timeouts
(``timeout`` seconds for connection, ACSE, DIMSE and network idle), and every failure is a
:class:`PacsError` with a one-line message.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgpu.errors import MedgpuError, OptionError

__all__ = ["PacsError", "PacsNode", "echo", "find", "find_series", "parse_query", "retrieve_series", "store"]

SERIES_KEYS = frozenset({
    "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
    "SeriesDate", "SeriesTime", "ProtocolName",
})
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # default character repertoire, no backslash


class PacsError(MedgpuError):
    """A DICOM node could not be reached, refused the association or failed an operation."""

    transient = True


@dataclass(frozen=True)
class PacsNode:
    """A remote DICOM node and the AE titles to use with it."""

    host: str
    port: int
    aec: str = "ANY-SCP"  # the node's (called) AE title
    aet: str = "MEDGPU"  # our (calling) AE title
    timeout: float = 30.0

    @classmethod
    def parse(cls, address: str, *, aet: str = "MEDGPU", aec: str = "ANY-SCP", timeout: float = 30.0) -> PacsNode:
        """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) with AE titles checked."""
        m = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", address.strip())
        if not m or not 0 < int(m.group(2)) < 65536:
            raise OptionError(f"PACS address must be HOST:PORT, got {address!r}")
        for what, title in (("--aet", aet), ("--aec", aec)):
            if not _AE_TITLE.fullmatch(title) or not title.strip():
                raise OptionError(f"{what} must be 1-16 printable characters without backslash, got {title!r}")
        if not timeout > 0:
            raise OptionError(f"timeout must be positive, got {timeout}")
        return cls(m.group(1), int(m.group(2)), aec.strip(), aet.strip(), float(timeout))

    def __str__(self) -> str:
        return f"{self.aec}@{self.host}:{self.port}"

    def _ae(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.aet)
        ae.connection_timeout = self.timeout
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.timeout
        ae.network_timeout = self.timeout
        ae.maximum_pdu_size = 0
        return ae

    def _associate(self, ae: Any, **kwargs: Any) -> Any:
        assoc = ae.associate(self.host, self.port, ae_title=self.aec, **kwargs)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise PacsError(f"cannot associate with DICOM node {self}: association {why}")
        return assoc


def parse_query(items: Iterable[str]) -> dict[str, str]:
    """``["PatientID=123", "Modality=CT"]`` -> a dict of DICOM keywords (checked) to values."""
    from pydicom.datadict import tag_for_keyword

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"--query must be KEYWORD=VALUE, got {item!r}")
        if tag_for_keyword(key) is None:
            raise OptionError(f"--query: {key!r} is not a DICOM keyword (e.g. PatientID, StudyDate, Modality)")
        out[key] = value.strip()
    return out


def _status(status: Any) -> int | None:
    return int(status.Status) if status is not None and "Status" in status else None


def echo(node: PacsNode) -> None:
    """C-ECHO (verification); raises :class:`PacsError` when the node does not answer."""
    from pynetdicom.sop_class import Verification

    ae = node._ae()
    ae.add_requested_context(Verification)
    assoc = node._associate(ae)
    try:
        code = _status(assoc.send_c_echo())
    finally:
        assoc.release()
    if code != 0:
        raise PacsError(f"C-ECHO to {node} failed (status {code})")


def find(node: PacsNode, query: Mapping[str, str], level: str, return_keys: Sequence[str]) -> list[dict[str, str]]:
    """C-FIND (Study Root) at ``level``; returns the values of ``return_keys`` and the query's keys."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FindModel

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in return_keys:
        setattr(ds, key, "")
    for key, value in query.items():
        setattr(ds, key, value)
    ae = node._ae()
    ae.add_requested_context(FindModel)
    assoc = node._associate(ae)
    out: list[dict[str, str]] = []
    try:
        for status, identifier in assoc.send_c_find(ds, FindModel):
            code = _status(status)
            if code is None:
                raise PacsError(f"C-FIND on {node}: no response (timeout or aborted association)")
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    out.append({k: str(identifier.get(k, "") or "") for k in (*return_keys, *query)})
            elif code != 0x0000:
                raise PacsError(f"C-FIND on {node} failed with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def find_series(node: PacsNode, query: Mapping[str, str]) -> list[dict[str, str]]:
    """The series matching ``query``: study-level keys select studies, series-level keys
    (:data:`SERIES_KEYS`) select series in them. Each item has ``StudyInstanceUID``,
    ``SeriesInstanceUID``, ``PatientID``, ``Modality``, ``SeriesDescription`` and
    ``NumberOfSeriesRelatedInstances`` (may be empty)."""
    study_q = {k: v for k, v in query.items() if k not in SERIES_KEYS}
    series_q = {k: v for k, v in query.items() if k in SERIES_KEYS}
    studies = find(node, study_q, "STUDY", ["StudyInstanceUID", "PatientID"])
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for study in sorted(studies, key=lambda s: s["StudyInstanceUID"]):
        uid = study["StudyInstanceUID"]
        if not uid or uid in seen:
            continue
        seen.add(uid)
        q = dict(series_q, StudyInstanceUID=uid)
        for s in find(node, q, "SERIES", ["SeriesInstanceUID", "Modality", "SeriesDescription",
                                          "NumberOfSeriesRelatedInstances"]):
            if s["SeriesInstanceUID"]:
                out.append(dict(s, StudyInstanceUID=uid, PatientID=study.get("PatientID", "")))
    out.sort(key=lambda s: (s["StudyInstanceUID"], s["SeriesInstanceUID"]))
    return out


def _storage_contexts() -> list[Any]:
    from pynetdicom import StoragePresentationContexts

    return list(StoragePresentationContexts)  # 120: fits the 128-context limit beside the Q/R model


def _retrieve_syntaxes() -> list[str]:
    """Transfer syntaxes we accept for retrieved instances: uncompressed first, then the
    compressed ones pydicom can decode (some need pylibjpeg plugins, see medgpu.io.dicom)."""
    from pydicom import uid
    from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

    return [*DEFAULT_TRANSFER_SYNTAXES, uid.RLELossless, uid.JPEGLosslessSV1, uid.JPEGLossless, uid.JPEGLSLossless,
            uid.JPEG2000Lossless, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLSNearLossless, uid.JPEG2000]


def _store_handler(out_dir: Path, received: list[Path]):
    from pynetdicom import evt

    def handle(event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        name = re.sub(r"[^0-9.]", "_", sop)[:64] or "instance"
        path = out_dir / f"{name}.dcm"
        tmp = out_dir / f".{name}.dcm.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(event.encoded_dataset())
            os.replace(tmp, path)
        except OSError:
            return 0xA700  # out of resources
        received.append(path)
        return 0x0000

    return [(evt.EVT_C_STORE, handle)]


def _listen_host(peer: str) -> str:
    """Listen on loopback only when the node is on loopback, else on every interface."""
    import ipaddress

    try:
        loopback = peer == "localhost" or ipaddress.ip_address(peer).is_loopback
    except ValueError:
        loopback = False
    return "127.0.0.1" if loopback else ""


def _retrieve_identifier(study_uid: str, series_uid: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    return ds


def _check_final(node: PacsNode, op: str, responses: Iterable[tuple[Any, Any]]) -> None:
    final = None
    for status, _identifier in responses:
        code = _status(status)
        if code is None:
            raise PacsError(f"{op} on {node}: no response (timeout or aborted association)")
        if code not in (0xFF00, 0xFF01):
            final = (code, status)
    if final is None:
        raise PacsError(f"{op} on {node}: no final status")
    code, status = final
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if code != 0x0000 or failed:
        raise PacsError(f"{op} on {node} ended with status 0x{code:04X} ({failed} failed sub-operations)")


def retrieve_series(node: PacsNode, study_uid: str, series_uid: str, out_dir: str | os.PathLike[str], *,
                    method: str = "get", move_port: int | None = None, expected: int | None = None) -> list[Path]:
    """Retrieve one series into ``out_dir`` (created); returns the files received.

    ``method="get"``: C-GET, instances come back on the same association.
    ``method="move"``: C-MOVE to our AE title; we listen on ``move_port`` meanwhile.
    ``expected``: number of instances the node announced; fewer is an error.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    received: list[Path] = []
    identifier = _retrieve_identifier(study_uid, series_uid)
    if method == "get":
        from pynetdicom import build_role
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

        ae = node._ae()
        ae.add_requested_context(GetModel)
        roles = []
        syntaxes = _retrieve_syntaxes()
        for cx in _storage_contexts():
            ae.add_requested_context(cx.abstract_syntax, syntaxes)
            roles.append(build_role(cx.abstract_syntax, scp_role=True))
        assoc = node._associate(ae, ext_neg=roles, evt_handlers=_store_handler(out, received))
        try:
            _check_final(node, "C-GET", assoc.send_c_get(identifier, GetModel))
        finally:
            if assoc.is_established:
                assoc.release()
    elif method == "move":
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MoveModel

        if not move_port:
            raise OptionError("C-MOVE needs --move-port: the port the node sends the images to")
        ae = node._ae()
        ae.add_requested_context(MoveModel)
        for cx in _storage_contexts():
            ae.add_supported_context(cx.abstract_syntax, _retrieve_syntaxes())
        try:
            server = ae.start_server((_listen_host(node.host), int(move_port)), block=False, evt_handlers=_store_handler(out, received))
        except OSError as exc:
            raise PacsError(f"cannot listen on port {move_port} for C-MOVE: {exc.strerror or exc}") from None
        try:
            assoc = node._associate(ae)
            try:
                _check_final(node, "C-MOVE", assoc.send_c_move(identifier, node.aet, MoveModel))
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            server.shutdown()
    else:
        raise OptionError(f"retrieve method must be get or move, got {method!r}")
    if not received:
        raise PacsError(f"{node} returned no instances for series {series_uid}")
    if expected and len(received) < expected:
        raise PacsError(f"{node} returned {len(received)} of {expected} instances of series {series_uid}")
    return sorted(received)


def store(node: PacsNode, files: Sequence[str | os.PathLike[str]]) -> int:
    """C-STORE ``files`` (Part-10 DICOM) to the node; returns how many were stored."""
    import pydicom

    datasets = [pydicom.dcmread(f) for f in files]
    if not datasets:
        return 0
    ae = node._ae()
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    if len(pairs) > 128:
        raise PacsError(f"too many SOP class / transfer syntax pairs ({len(pairs)}) for one association")
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
    assoc = node._associate(ae)
    stored = 0
    try:
        for ds in datasets:
            code = _status(assoc.send_c_store(ds))
            if code is None:
                raise PacsError(f"C-STORE to {node}: no response (timeout or aborted association)")
            if code != 0x0000 and not (0xB000 <= code <= 0xBFFF):  # success or warning
                raise PacsError(f"C-STORE of {ds.SOPInstanceUID} to {node} failed with status 0x{code:04X}")
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return stored

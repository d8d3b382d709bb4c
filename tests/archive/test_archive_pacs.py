"""PACS: pull a study from a real DICOM node on loopback (C-FIND + C-GET / C-MOVE), archive it,
push a decoded series back (C-STORE). The node is the pynetdicom SCP in ``dicom_server``."""
from __future__ import annotations

import socket

import pydicom
import pytest
from archive_support import leftovers, write_dicom_series
from dicom_server import DicomServer
from typer.testing import CliRunner

from medgpu import api
from medgpu.archive import CodecSpec, PacsNode, archive
from medgpu.archive.ledger import LEDGER_NAME, Ledger
from medgpu.archive.pacs import find_series, parse_query
from medgpu.cli import app
from medgpu.errors import OptionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pacs(tmp_path):
    folder = tmp_path / "pacs"
    study, ct, _ = write_dicom_series(folder / "p1-ct", patient_id="PAT1", slices=6, seed=1)
    _, mr, _ = write_dicom_series(folder / "p1-mr", patient_id="PAT1", study_uid=study, sample="MR_small.dcm",
                                  slices=4, seed=2)
    write_dicom_series(folder / "p2", patient_id="PAT2", slices=3, seed=3)  # another patient: not pulled
    move_port = free_port()
    with DicomServer(folder, known_aes={"MEDGPU": ("127.0.0.1", move_port)}, timeout=10) as server:
        yield server, study, ct, mr, move_port


def one_line_error(result, needle: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medgpu: error: ") and needle in lines[0], result.stderr


def test_pull_archive_and_push_back(pacs, tmp_path, codec, random_weights):
    server, study, ct, mr, _ = pacs
    dest = tmp_path / "dest"
    args = ["archive", str(dest), "--from-pacs", server.address, "--aec", server.ae_title, "--query", "PatientID=PAT1",
            "--weights", str(random_weights), "--gop", "3", "--workers", "0", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 of 2 series archived" in result.stdout
    assert server.requests.count("C-GET SERIES") == 2 and "C-FIND STUDY" in server.requests
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        rows = {r["key"]: r for r in led.rows("done")}
    assert set(rows) == {f"dicom:{ct}", f"dicom:{mr}"}
    shapes = {key: api.decompress(dest / r["name"], device="cpu", codec=codec).shape for key, r in rows.items()}
    assert shapes == {f"dicom:{ct}": (16, 16, 6), f"dicom:{mr}": (16, 16, 4)}
    assert leftovers(dest) == []

    # resuming pulls nothing again
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and server.requests.count("C-GET SERIES") == 2

    # push the CT series back, decoded, as a new lossy series of the same study
    result = CliRunner().invoke(app, ["restore", str(dest), "--to-pacs", server.address, "--aec", server.ae_title,
                                      "--series", ct, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "restored 1 series" in result.stdout
    assert len(server.received) == 6
    pushed = [pydicom.dcmread(p) for p in server.received]
    assert {ds.StudyInstanceUID for ds in pushed} == {study}
    (new_series,) = {ds.SeriesInstanceUID for ds in pushed}
    assert new_series not in (ct, mr)
    assert all(ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "MEDGPU" for ds in pushed)
    assert float(pushed[0].LossyImageCompressionRatio) == pytest.approx(rows[f"dicom:{ct}"]["ratio"], rel=1e-5)
    node = PacsNode.parse(server.address, aec=server.ae_title)
    found = {s["SeriesInstanceUID"]: s for s in find_series(node, {"PatientID": "PAT1"})}
    assert set(found) == {ct, mr, new_series} and found[new_series]["NumberOfSeriesRelatedInstances"] == "6"


def test_pull_with_c_move_and_a_series_level_query(pacs, tmp_path):
    server, _, _, mr, move_port = pacs
    node = PacsNode.parse(server.address, aec=server.ae_title, timeout=10)
    summary = archive(None, tmp_path / "dest", pacs=node, query={"PatientID": "PAT1", "Modality": "MR"},
                      retrieve="move", move_port=move_port, workers=0, gop=3, codec=CodecSpec(pretrained=False))
    assert summary["counts"]["done"] == 1 and summary["series"][0]["key"] == f"dicom:{mr}"
    assert server.requests.count("C-MOVE SERIES") == 1


def test_unreachable_node_and_bad_options_are_one_line_errors(tmp_path, random_weights):
    port = free_port()  # nothing listens there
    result = CliRunner().invoke(app, ["archive", str(tmp_path / "d"), "--from-pacs", f"127.0.0.1:{port}",
                                      "--weights", str(random_weights), "--workers", "0", "--no-progress"])
    one_line_error(result, "cannot associate")
    one_line_error(CliRunner().invoke(app, ["archive", str(tmp_path / "d"), "--from-pacs", "nohostport"]), "HOST:PORT")
    one_line_error(CliRunner().invoke(app, ["archive", str(tmp_path / "only-dest")]), "SRC and DEST")
    one_line_error(CliRunner().invoke(app, ["archive", str(tmp_path / "d"), "--from-pacs", f"127.0.0.1:{port}",
                                            "--query", "NotAKeyword=1"]), "not a DICOM keyword")
    one_line_error(CliRunner().invoke(app, ["restore", str(tmp_path)]), "--to-pacs")
    one_line_error(CliRunner().invoke(app, ["restore", str(tmp_path), str(tmp_path / "o")]), "not a medgpu archive")
    with pytest.raises(OptionError):
        parse_query(["PatientID"])
    with pytest.raises(OptionError):
        PacsNode.parse("127.0.0.1:104", aet="WAY-TOO-LONG-AE-TITLE")

"""Archive jobs end to end: resume after SIGKILL, retries, dead workers, Dask, restore.

Random (seeded) codec weights throughout: these tests are about plumbing, not quality.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from archive_support import count_done, die_once, leftovers, make_tree, subprocess_env, write_nifti
from typer.testing import CliRunner

from medgpu import api
from medgpu.archive import CodecSpec, archive, restore
from medgpu.archive.ledger import LEDGER_NAME, Ledger
from medgpu.archive.runners import ProcessRunner, SequentialRunner
from medgpu.archive.worker import run_task
from medgpu.cli import app
from medgpu.errors import OptionError

RANDOM = CodecSpec(pretrained=False)


def streams(dest: Path) -> list[Path]:
    return sorted((dest / "streams").rglob("*.mgpu"))


def assert_archive_complete(dest: Path, codec, n_series: int) -> dict:
    """Every done series has exactly one stream, matching its ledger row, and it decodes."""
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        done = led.rows("done")
    assert len(done) == n_series
    assert [dest / r["name"] for r in sorted(done, key=lambda r: r["name"])] == streams(dest)
    for r in done:
        path = dest / r["name"]
        assert path.stat().st_size == r["bytes"]
        volume = api.decompress(path, device="cpu", codec=codec)
        assert list(volume.shape) == r["result"]["shape"]
        assert (dest / (r["name"] + ".json")).is_file()
    assert leftovers(dest) == []
    return {r["key"]: r for r in done}


@pytest.fixture
def small_tree(tmp_path):
    made = make_tree(tmp_path / "src", nifti=2, dicom=1)
    return tmp_path / "src", made


def test_archive_resume_summary_and_restore(small_tree, tmp_path, codec):
    src, made = small_tree
    dest = tmp_path / "dest"
    seen = []
    summary = archive(src, dest, workers=0, codec=RANDOM, gop=3, progress=lambda c, t, m: seen.append((dict(c), t)))
    assert summary["counts"] == {"series": 4, "pending": 0, "running": 0, "done": 3, "failed": 0, "skipped": 1}
    assert summary["this_run"]["archived"] == 3
    assert seen[-1][0]["done"] == 3 and seen[-1][1] == 4
    assert summary["total_ratio"] == pytest.approx(summary["original_bytes"] / summary["stream_bytes"])
    (problem,) = summary["problems"]
    assert problem["state"] == "skipped" and problem["source"] == str(made["broken"])
    assert "cannot read" in problem["error"]
    rows = assert_archive_complete(dest, codec, 3)
    on_disk = json.loads((dest / "summary.json").read_text())
    assert on_disk["counts"]["done"] == 3 and on_disk["problems"][0]["source"] == str(made["broken"])
    with open(dest / "summary.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {r["state"] for r in table} == {"done", "skipped"} and len(table) == 4

    # resume: nothing is redone
    again = archive(src, dest, workers=0, codec=RANDOM, gop=3)
    assert again["this_run"] == {"archived": 0, "skipped": 0, "failed": 0, "retries": 0}
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        assert sum(e["event"] == "claimed" for e in led.events()) == 4  # 3 done + the broken file, once each
    with pytest.raises(OptionError, match="quality"):  # an archive has one set of coding options
        archive(src, dest, workers=0, codec=RANDOM, gop=3, quality=10)

    # restore to NIfTI: same voxels as decoding the stream
    out = restore(dest, tmp_path / "nii", codec=None, device="cpu")
    assert len(out["restored"]) == 3 and not out["failed"]
    for item in out["restored"]:
        expected = api.decompress(item["stream"], device="cpu", codec=codec).array
        import nibabel as nib

        got = np.asarray(nib.load(item["output"]).dataobj)
        assert got.shape[:3] == expected.shape[:3]
    assert len(restore(dest, tmp_path / "nii")["exists"]) == 3  # existing outputs are left alone

    # restore one DICOM series to DICOM: new series, same study, lossy attributes with the ratio
    key = f"dicom:{made['dicom'][0]}"
    out = restore(dest, tmp_path / "dcm", to="dicom", series=[made["dicom"][0]])
    (item,) = out["restored"]
    files = sorted(Path(item["output"]).glob("*.dcm"))
    assert len(files) == 6
    ds = pydicom.dcmread(files[0])
    source = pydicom.dcmread(sorted((src / "dicom" / "s0a").glob("*.dcm"))[0])
    assert ds.SeriesInstanceUID != made["dicom"][0] and ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.LossyImageCompression == "01"
    assert float(ds.LossyImageCompressionRatio) == pytest.approx(rows[key]["ratio"], rel=1e-5)
    assert ds.LossyImageCompressionMethod == "MEDGPU"
    with pytest.raises(OptionError, match="no archived series"):
        restore(dest, tmp_path / "dcm2", series=["1.2.3.nope"])


def test_resume_without_quality_keeps_the_archives_own(small_tree, tmp_path):
    """An archive started at a non-default quality resumes without --quality (the default may
    have changed between the runs) and is never mixed with another quality."""
    src, _ = small_tree
    dest = tmp_path / "dest"
    first = archive(src, dest, workers=0, codec=RANDOM, gop=3, quality=5)
    assert first["this_run"]["archived"] == 3
    again = archive(src, dest, workers=0, codec=RANDOM, gop=3)
    assert again["this_run"]["archived"] == 0 and again["counts"]["done"] == 3
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        assert json.loads(led.get_meta("options"))["quality"] == 5


def test_transient_failures_are_retried_then_reported(tmp_path):
    src = tmp_path / "src"
    write_nifti(src / "a.nii.gz", 0)
    write_nifti(src / "b.nii.gz", 1)
    calls: dict[str, int] = {}

    def flaky(task):
        calls[task["key"]] = calls.get(task["key"], 0) + 1
        if task["key"].endswith("a.nii.gz") and calls[task["key"]] == 1:
            raise OSError(errno.EIO, "input/output error")  # as if the worker died with it
        if task["key"].endswith("b.nii.gz"):
            return {"status": "error", "error_kind": "transient", "error": "disk hiccup"}
        return run_task(task)

    dest = tmp_path / "dest"
    summary = archive(src, dest, codec=RANDOM, gop=3, retries=2, backoff=0.01, runner=SequentialRunner(flaky))
    assert summary["counts"]["done"] == 1 and summary["counts"]["failed"] == 1
    assert summary["this_run"]["retries"] == 1 + 2
    assert calls == {f"file:{src / 'a.nii.gz'}": 2, f"file:{src / 'b.nii.gz'}": 3}  # bounded: 1 + 2 retries
    (problem,) = summary["problems"]
    assert problem["state"] == "failed" and "disk hiccup (after 3 attempts)" in problem["error"]
    # a later run gives failed series a new set of retries
    summary = archive(src, dest, codec=RANDOM, gop=3, workers=0)
    assert summary["counts"]["done"] == 2 and summary["recovered"]["failed_reset"] == 1


def test_interrupted_run_and_its_temporary_files_are_recovered(small_tree, tmp_path, codec):
    src, _ = small_tree
    dest = tmp_path / "dest"
    calls = []

    def interrupt_second(task):
        calls.append(task["key"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_task(task)

    with pytest.raises(KeyboardInterrupt):
        archive(src, dest, codec=RANDOM, gop=3, runner=SequentialRunner(interrupt_second))
    assert count_done(dest) == 1
    # what a SIGKILL in the middle of writing leaves behind
    part = dest / "streams" / "nifti" / "subject0" / ".scan0.mgpu.1234abcd.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(b"half a stream")
    (dest / ".work" / "series-x").mkdir(parents=True)
    (dest / ".summary.json.deadbeef.part").write_text("{")
    summary = archive(src, dest, codec=RANDOM, gop=3, workers=0)
    assert summary["recovered"]["interrupted"] == 1 and summary["recovered"]["temporaries_removed"] >= 2
    assert summary["this_run"]["archived"] == 2
    assert_archive_complete(dest, codec, 3)


def test_a_series_that_keeps_killing_its_job_is_failed(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    write_nifti(src / "a.nii.gz", 0)

    def crash(task):
        raise KeyboardInterrupt  # stands for the job dying while this series runs

    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            archive(src, dest, codec=RANDOM, retries=0, runner=SequentialRunner(crash))
    summary = archive(src, dest, codec=RANDOM, retries=0, runner=SequentialRunner(crash))
    assert summary["counts"]["failed"] == 1
    assert "started 2 times without a result" in summary["problems"][0]["error"]


def test_dead_worker_process_is_retried(tmp_path, codec):
    src = tmp_path / "src"
    make_tree(src, nifti=0, dicom=2, broken=False)  # DICOM only: workers need no MONAI (faster)
    dest = tmp_path / "dest"
    runner = ProcessRunner(2, task_fn=die_once)
    try:
        summary = archive(src, dest, codec=RANDOM, gop=3, threads=1, retries=2, backoff=0, runner=runner)
    finally:
        runner.close()
    assert summary["counts"]["done"] == 2, summary["problems"]
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        assert all(r["attempts"] >= 2 for r in led.rows())
        assert any("worker lost" in (e["detail"] or "") for e in led.events() if e["event"] == "retry")
    for marker in dest.glob("died-*"):
        marker.unlink()
    assert_archive_complete(dest, codec, 2)


def test_sigkill_midway_then_resume(tmp_path, codec, random_weights):
    """12 scans + 1 broken file; the job (coordinator and its 2 workers) is SIGKILLed after
    a few series are done; re-running finishes it: every scan archived exactly once, all
    decodable, no temporary files, the broken file reported."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    made = make_tree(src, nifti=8, dicom=4)
    args = ["archive", str(src), str(dest), "--weights", str(random_weights), "--gop", "3", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "medgpu", *args, "--workers", "2", "--threads", "1"],
                            env=subprocess_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = count_done(dest)
            if done >= 3:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = done
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_at is not None, f"the job ended (rc {proc.returncode}) before it was killed: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        done_before = {r["key"] for r in led.rows("done")}
    assert 3 <= len(done_before) < 12

    result = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "12 of 13 series archived" in result.stdout
    assert str(made["broken"]) in result.stdout  # reported
    rows = assert_archive_complete(dest, codec, 12)
    with Ledger(dest / LEDGER_NAME, readonly=True) as led:
        for key in done_before:  # not redone
            assert [e["event"] for e in led.events(key)].count("claimed") == 1
        broken = led.row(f"file:{made['broken']}")
    assert broken["state"] == "skipped" and "cannot read" in broken["error"]
    summary = json.loads((dest / "summary.json").read_text())
    assert summary["counts"]["done"] == 12 and [p["source"] for p in summary["problems"]] == [str(made["broken"])]
    assert {f"dicom:{s}" for s in made["dicom"]} <= set(rows)


def test_dask_two_workers_give_the_same_streams(tmp_path):
    pytest.importorskip("distributed")
    src = tmp_path / "src"
    make_tree(src, nifti=1, dicom=3, broken=False)
    seq = archive(src, tmp_path / "seq", codec=RANDOM, gop=3, workers=0, threads=1)
    dsk = archive(src, tmp_path / "dask", codec=RANDOM, gop=3, dask=True, workers=2)
    assert dsk["runner"].startswith("Dask LocalCluster of 2")
    assert seq["counts"]["done"] == dsk["counts"]["done"] == 4
    for s in seq["series"]:
        a = (tmp_path / "seq" / s["stream"]).read_bytes()
        b = (tmp_path / "dask" / s["stream"]).read_bytes()
        assert a == b, s["key"]
    assert [s["sha256"] for s in seq["series"]] == [s["sha256"] for s in dsk["series"]]
    assert leftovers(tmp_path / "dask") == []


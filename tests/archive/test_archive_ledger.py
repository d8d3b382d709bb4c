"""The ledger: transitions under transactions, recovery after a dead run, the job lock."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from archive_support import subprocess_env
from medgpu.archive.ledger import LEDGER_NAME, Ledger, acquire_lock
from medgpu.errors import OptionError, OutputError


def add(ledger: Ledger, run: str, key: str, name: str | None = None) -> None:
    ledger.upsert(run, key, "nifti", {"paths": [f"/x/{key}"]}, name or f"streams/{key}.mgpu", "fp", {})


def test_transitions_and_wal(tmp_path):
    with Ledger(tmp_path / LEDGER_NAME) as led:
        assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        led.begin_run("r1", tmp_path)
        add(led, "r1", "a")
        add(led, "r1", "b")
        assert led.counts()["pending"] == 2
        assert led.claim("r1", "a") == 1
        with pytest.raises(RuntimeError):  # a claim needs a pending row
            led.claim("r1", "a")
        with pytest.raises(RuntimeError):  # only the run that claimed it may finish it
            led.mark_done("other-run", "a", {"bytes": 1, "original_bytes": 2})
        led.mark_retry("r1", "a", "EIO")
        assert led.claim("r1", "a") == 2
        (tmp_path / "streams").mkdir()
        (tmp_path / "streams" / "a.mgpu").write_bytes(b"x" * 10)
        led.mark_done("r1", "a", {"bytes": 10, "original_bytes": 40, "ratio": 4.0, "psnr": float("inf"), "sha256": "s"})
        led.claim("r1", "b")
        led.mark_failed("r1", "b", "cannot read", skipped=True)
        row = led.row("a")
        assert (row["state"], row["attempts"], row["bytes"], row["psnr"]) == ("done", 2, 10, float("inf"))
        assert led.row("b")["state"] == "skipped"
        assert [e["event"] for e in led.events("a")] == ["discovered", "claimed", "retry", "claimed", "done"]
        # a done series is never re-queued by discovery; a skipped one only if its input changed
        add(led, "r1", "a")
        assert led.row("a")["state"] == "done"
        led.upsert("r1", "b", "nifti", {"paths": ["/x/b"]}, "streams/b.mgpu", "fp", {})
        assert led.row("b")["state"] == "skipped"
        led.upsert("r1", "b", "nifti", {"paths": ["/x/b"]}, "streams/b.mgpu", "fp2", {})
        assert led.row("b")["state"] == "pending"


def test_recovery_after_a_dead_run(tmp_path):
    (tmp_path / "streams").mkdir()
    with Ledger(tmp_path / LEDGER_NAME) as led:
        led.begin_run("r1", tmp_path)
        for key in ("a", "b", "c", "d"):
            add(led, "r1", key)
            led.claim("r1", key)
        (tmp_path / "streams" / "c.mgpu").write_bytes(b"123")
        led.mark_done("r1", "c", {"bytes": 3, "original_bytes": 9})
        led.mark_done("r1", "d", {"bytes": 5, "original_bytes": 9})  # its stream will be missing
        led.mark_failed("r1", "b", "gave up")
        # r1 "dies" here with a still running
    with Ledger(tmp_path / LEDGER_NAME) as led:
        recovered = led.begin_run("r2", tmp_path)
        assert recovered == {"interrupted": 1, "failed_reset": 1, "missing_output": 1}
        states = {r["key"]: r["state"] for r in led.rows()}
        assert states == {"a": "pending", "b": "pending", "c": "done", "d": "pending"}
        assert led.row("a")["attempts"] == 1  # an interruption is remembered, a failure gets new retries
        assert led.row("b")["attempts"] == 0
        runs = dict(led._db.execute("SELECT run_id, status FROM runs").fetchall())
        assert runs == {"r1": "interrupted", "r2": "running"}


def test_name_collisions_get_a_suffix(tmp_path):
    with Ledger(tmp_path / LEDGER_NAME) as led:
        add(led, "r", "k1", "streams/x.mgpu")
        add(led, "r", "k2", "streams/x.mgpu")
        names = {r["key"]: r["name"] for r in led.rows()}
        assert names["k1"] == "streams/x.mgpu"
        assert names["k2"].startswith("streams/x-") and names["k2"].endswith(".mgpu")


def test_options_are_fixed_per_archive(tmp_path):
    with Ledger(tmp_path / LEDGER_NAME) as led:
        led.check_options({"quality": 42, "gop": 30})
        led.check_options({"quality": 42, "gop": 30})
        with pytest.raises(OptionError, match="quality 42"):
            led.check_options({"quality": 10, "gop": 30})


def test_readonly_needs_an_archive(tmp_path):
    with pytest.raises(OptionError, match="not a medgpu archive"):
        Ledger(tmp_path / LEDGER_NAME, readonly=True)


def test_one_job_per_archive_and_lock_dies_with_its_process(tmp_path):
    with acquire_lock(tmp_path):
        with pytest.raises(OutputError, match="another archive job"):
            with acquire_lock(tmp_path):
                pass
        code = ("import sys; from pathlib import Path; from medgpu.archive.ledger import acquire_lock\n"
                "try:\n    acquire_lock(Path(sys.argv[1])).__enter__()\nexcept Exception as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             timeout=60, env=subprocess_env())
        assert "another archive job" in out.stdout
    with acquire_lock(tmp_path):  # released
        pass


def test_concurrent_reader_sees_committed_state(tmp_path):
    with Ledger(tmp_path / LEDGER_NAME) as led:
        add(led, "r", "a")
        reader = sqlite3.connect(f"file:{tmp_path / LEDGER_NAME}?mode=ro", uri=True)
        with led.transaction():
            led._db.execute("UPDATE series SET state='running' WHERE key='a'")
            # WAL: the reader is not blocked and sees the last committed state
            assert reader.execute("SELECT state FROM series").fetchone()[0] == "pending"
        assert reader.execute("SELECT state FROM series").fetchone()[0] == "running"
        reader.close()

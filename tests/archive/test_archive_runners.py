"""Local worker processes: a normal close lets work finish; an aborted close (Ctrl-C or an
error in the coordinator) stops the workers at once instead of waiting for their tasks."""
from __future__ import annotations

import os
import time

from medgpu.archive.runners import ProcessRunner


def test_close_waits_for_work_in_flight():
    runner = ProcessRunner(1, task_fn=time.sleep)
    runner.submit("nap", 0.5)
    assert runner.results(timeout=60) == [("nap", None)]
    runner.close()


def test_aborted_close_stops_the_workers_now():
    runner = ProcessRunner(2, task_fn=time.sleep)
    runner.submit("a", 120)
    runner.submit("b", 120)
    time.sleep(3)  # both workers are inside their task
    procs = list(runner._pool._processes.values())  # noqa: SLF001 - what the abort must stop
    assert len(procs) == 2 and all(p.is_alive() for p in procs)
    t0 = time.monotonic()
    runner.close(abort=True)
    assert time.monotonic() - t0 < 15
    while any(_running(p) for p in procs) and time.monotonic() - t0 < 15:  # reaping may lag the kill
        time.sleep(0.1)
    assert not any(_running(p) for p in procs)


def _running(proc) -> bool:
    """Alive for real: the pool's own manager thread may reap a worker before ``proc`` does, and
    then ``is_alive()`` (which cannot reap it any more) keeps saying True."""
    if not proc.is_alive():
        return False
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True

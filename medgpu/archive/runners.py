"""Where tasks run: in the coordinator, in a local process pool, or on a Dask cluster.

All runners have the same small interface, used only by the coordinator:

* ``slots``: how many tasks may be in flight at once;
* ``submit(tag, task)``: start :func:`medgpu.archive.worker.run_task` on ``task``;
* ``results(timeout)``: the ``(tag, outcome)`` pairs finished so far (waiting up to
  ``timeout`` seconds for the first); ``outcome`` is the worker's result dict, or the
  exception that stopped it from returning one (a dead worker: retried by the coordinator);
* ``close(abort)``: stop; ``abort`` after Ctrl-C or an error stops work in flight at once.

Local worker processes are started with ``spawn`` (no fork of a process that has torch
threads), ignore SIGINT (the coordinator handles Ctrl-C) and exit by themselves when their
coordinator dies, even by SIGKILL, so no orphan goes on writing after the job is gone.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import Any, Protocol

from medgpu.archive.worker import run_task

__all__ = ["DaskRunner", "ProcessRunner", "Runner", "SequentialRunner", "make_runner"]

Outcome = dict[str, Any] | BaseException


class Runner(Protocol):
    slots: int
    description: str

    def submit(self, tag: str, task: dict[str, Any]) -> None: ...

    def results(self, timeout: float) -> list[tuple[str, Outcome]]: ...

    def close(self, abort: bool = False) -> None: ...


class SequentialRunner:
    """Runs each task in the coordinator process, one at a time (``workers=0``)."""

    slots = 1
    description = "in-process"

    def __init__(self, task_fn: Any = run_task) -> None:
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._fn = task_fn

    def submit(self, tag: str, task: dict[str, Any]) -> None:
        self._queue.append((tag, task))

    def results(self, timeout: float) -> list[tuple[str, Outcome]]:
        if not self._queue:
            time.sleep(min(timeout, 0.05))
            return []
        tag, task = self._queue.popleft()
        try:
            return [(tag, self._fn(task))]
        except Exception as exc:  # run_task reports its own failures; this is a bug or a test hook
            return [(tag, exc)]

    def close(self, abort: bool = False) -> None:
        self._queue.clear()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(70)  # the coordinator is gone: stop before writing anything more
        time.sleep(0.2)


def _worker_init(parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="medgpu-parent-watch").start()


class ProcessRunner:
    """A local pool of ``workers`` processes. A worker that dies breaks the pool; the tasks
    in flight are reported as failed (the coordinator retries them) and a new pool is made."""

    def __init__(self, workers: int, task_fn: Any = run_task) -> None:
        import multiprocessing

        self.slots = max(1, int(workers))
        self.description = f"{self.slots} local worker process(es)"
        self._ctx = multiprocessing.get_context("spawn")
        self._fn = task_fn
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: dict[cf.Future, str] = {}

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.slots, mp_context=self._ctx, initializer=_worker_init,
                                                initargs=(os.getpid(),))
        return self._pool

    def submit(self, tag: str, task: dict[str, Any]) -> None:
        try:
            fut = self._executor().submit(self._fn, task)
        except cf.BrokenExecutor:
            self._reset()
            fut = self._executor().submit(self._fn, task)
        self._futures[fut] = tag

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def results(self, timeout: float) -> list[tuple[str, Outcome]]:
        if not self._futures:
            time.sleep(min(timeout, 0.05))
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out: list[tuple[str, Outcome]] = []
        broken = False
        for fut in done:
            tag = self._futures.pop(fut)
            try:
                out.append((tag, fut.result()))
            except BaseException as exc:
                broken = broken or isinstance(exc, cf.BrokenExecutor)
                out.append((tag, exc))
        if broken:
            self._reset()
        return out

    def close(self, abort: bool = False) -> None:
        """Finish and stop the workers; with ``abort`` (Ctrl-C, an error) stop them now,
        leaving their series ``running`` in the ledger for the next run to redo (as after a
        SIGKILL) rather than waiting for them, or hanging in a pool the interrupt broke."""
        if self._pool is not None:
            if abort:
                procs = list((getattr(self._pool, "_processes", None) or {}).values())
                self._pool.shutdown(wait=False, cancel_futures=True)
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.join(timeout=10)
            else:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._futures.clear()


class DaskRunner:
    """Tasks on a Dask cluster: ``address`` of a running scheduler, or a LocalCluster of
    ``workers`` processes (one thread each) on loopback when ``address`` is None."""

    def __init__(self, address: str | None = None, workers: int = 2, timeout: float = 60.0) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - optional dependency
            from medgpu.errors import OptionError

            raise OptionError('--dask needs Dask: pip install "dask[distributed]"') from None
        self._cluster = None
        if address:
            self._client = Client(address, timeout=timeout)
            self.description = f"Dask scheduler {address}"
        else:
            self._cluster = LocalCluster(n_workers=max(1, int(workers)), threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
            self._client = Client(self._cluster, timeout=timeout)
            self.description = f"Dask LocalCluster of {max(1, int(workers))} worker(s)"
        self._futures: dict[Any, str] = {}
        self._slots, self._slots_at = 1, -1e9

    @property
    def slots(self) -> int:
        """Worker threads of the cluster (asked at most every 5 s: workers may come and go)."""
        now = time.monotonic()
        if now - self._slots_at > 5.0:
            try:
                self._slots = max(1, sum(self._client.nthreads().values()))
            except Exception:  # scheduler briefly unreachable: keep the last answer
                pass
            self._slots_at = now
        return self._slots

    def submit(self, tag: str, task: dict[str, Any]) -> None:
        fut = self._client.submit(run_task, task, key=f"medgpu-archive-{uuid.uuid4().hex}", pure=False)
        self._futures[fut] = tag

    def results(self, timeout: float) -> list[tuple[str, Outcome]]:
        from distributed import wait

        if not self._futures:
            time.sleep(min(timeout, 0.05))
            return []
        try:
            wait(list(self._futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        except Exception:  # dask's own TimeoutError in older versions
            pass
        out: list[tuple[str, Outcome]] = []
        for fut in [f for f in self._futures if f.done()]:
            tag = self._futures.pop(fut)
            if fut.status == "finished":
                try:
                    out.append((tag, fut.result()))
                except BaseException as exc:
                    out.append((tag, exc))
            else:
                exc = fut.exception() if fut.status == "error" else None
                out.append((tag, exc if isinstance(exc, BaseException) else RuntimeError(f"dask task {fut.status}")))
            fut.release()
        return out

    def close(self, abort: bool = False) -> None:
        for fut in list(self._futures):
            fut.cancel()
        self._futures.clear()
        try:
            self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()


def make_runner(workers: int | None, dask: bool = False, scheduler: str | None = None) -> Runner:
    """``workers=0``: in-process; ``dask``/``scheduler``: Dask; else a local process pool."""
    if dask or scheduler:
        return DaskRunner(scheduler, workers if workers else 2)
    if workers == 0:
        return SequentialRunner()
    return ProcessRunner(workers if workers else default_workers())


def default_workers() -> int:
    """One worker per CPU core, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))

"""Archive jobs: many series in, one verified ``.mgpu`` stream each out, resumable, in parallel.

* :func:`archive` -- discover series in a folder tree, a CSV manifest or a PACS query,
  compress and verify each (local worker processes or Dask), keep a SQLite ledger so an
  interrupted job resumes, write a summary (``DEST/summary.json`` / ``.csv``).
* :func:`restore` -- decode an archive back to NIfTI, to DICOM (lossy attributes set) or
  to a PACS (C-STORE).

Modules: :mod:`~medgpu.archive.discover` (what to archive), :mod:`~medgpu.archive.ledger`
(state and its consistency model), :mod:`~medgpu.archive.worker` (one series),
:mod:`~medgpu.archive.runners` (in-process, processes, Dask), :mod:`~medgpu.archive.pacs`
(DICOM network), :mod:`~medgpu.archive.job` (the coordinator).
"""
from __future__ import annotations

from medgpu.archive.job import archive, restore, summary_paths
from medgpu.archive.pacs import PacsError, PacsNode
from medgpu.archive.worker import CodecSpec

__all__ = ["CodecSpec", "PacsError", "PacsNode", "archive", "restore", "summary_paths"]

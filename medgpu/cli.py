"""``medgpu`` command line: parse, call :mod:`medgpu.api`, print.

Heavy imports (torch, MONAI, nibabel) happen inside the commands, so ``medgpu --help`` is
instant. Every failure is one line on stderr and a non-zero exit, never a traceback
(set ``MEDGPU_DEBUG=1`` to see the traceback of an unexpected error).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from medgpu.adapt.config import AdaptConfig
from medgpu.errors import MedgpuError


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Click's usage errors, whether typer vendors click (new) or depends on it (old)."""
    kinds: list[type[BaseException]] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer vendors click
        pass
    return tuple(kinds)


def _aborts() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [typer.Abort, KeyboardInterrupt]
    try:
        import click

        kinds.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that ``atomic_paths`` removes partial outputs."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _fail(message: str, code: int) -> None:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"medgpu: error: {text}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence third-party warnings and log records (MONAI's, say) so stderr stays ours."""
    if os.environ.get("MEDGPU_DEBUG"):
        yield
        return
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


class OneLineErrorGroup(TyperGroup):
    """Command group whose errors, usage errors included, are one line on stderr."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:  # SIGTERM unwinds like an exception, so partial outputs are cleaned up
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            with _quiet_libraries():
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Terminated:
            _fail("terminated", 143)
        except MedgpuError as exc:
            _fail(str(exc), exc.exit_code)
        except _usage_errors() as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `medgpu`: show the help
                print(exc.format_message())  # type: ignore[attr-defined]
                sys.exit(0)
            hint = " (see --help)" if getattr(exc, "exit_code", 1) == 2 else ""
            _fail(exc.format_message() + hint, getattr(exc, "exit_code", 2))  # type: ignore[attr-defined]
        except _aborts():
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory (try a smaller --gop or --device cpu)", 1)
        except Exception as exc:  # never a traceback for users
            if os.environ.get("MEDGPU_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc}", 1)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if rv == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent Exit(130)
            _fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrorGroup,
    name="medgpu",
    help="Compress MRI/CT volumes with a neural video codec (slices are frames).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr, one step per GoP (per update step while adapting); None
    when stderr is not a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), console=console, transient=False) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, unit="steps" if stage == "adapting" else "GoPs")
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _fmt_db(value: Any) -> str:
    return "lossless (inf dB)" if value == float("inf") else f"{value:.2f} dB"


ADAPT_DEFAULT = False  # off: ~60 s more per 256x256 GoP on a CPU for ~1 % BD-rate with the shipped weights (docs/adaptation.md)

QualityOpt = Annotated[Optional[int], typer.Option("--quality", "-q", help="Quality index 0..63 (higher: more bits, higher PSNR). Default: 63, the highest trained rate (docs/evaluation.md).", show_default=False)]


@app.command()
def compress(
    src: Annotated[Path, typer.Argument(metavar="IN", help="NIfTI file (.nii/.nii.gz), DICOM file or DICOM series folder.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="OUT", help="Output .mgpu (default: IN with .mgpu).", show_default=False)] = None,
    quality: QualityOpt = None,
    gop: Annotated[int, typer.Option("--gop", help="Slices per group of pictures (GoP).")] = 30,
    slice_axis: Annotated[Optional[int], typer.Option("--slice-axis", help="Axis coded as frames (default: the one with the largest spacing).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    adapt: Annotated[bool, typer.Option("--adapt/--no-adapt", help="Content-adaptive encoding: optimise encoder-side adapters on each GoP before coding it (slower encode, same decoder).")] = ADAPT_DEFAULT,
    adapt_steps: Annotated[int, typer.Option("--adapt-steps", help="Update epochs over the patch-GoPs of each GoP.")] = AdaptConfig.steps,
    adapt_patch: Annotated[int, typer.Option("--adapt-patch", help="Patch size (pixels) of the patch-GoPs.")] = AdaptConfig.patch,
    adapt_frames: Annotated[Optional[int], typer.Option("--adapt-frames", help="Update on the first N frames of each GoP only (default: the whole GoP).", show_default=False)] = None,
    adapt_scope: Annotated[str, typer.Option("--adapt-scope", help="adapters (the method) or full (every encoder-side parameter).")] = AdaptConfig.scope,
) -> None:
    """Compress a volume to OUT.mgpu plus an OUT.mgpu.json sidecar with the report."""
    from medgpu import api

    config = AdaptConfig(steps=adapt_steps, patch=adapt_patch, frames=adapt_frames, scope=adapt_scope).validate()
    config = config if adapt else None  # validated either way: a bad --adapt-* value is a mistake
    with _progress(not no_progress) as progress:
        report = api.compress(src, out, quality=quality, gop=gop, slice_axis=slice_axis, device=device,
                              progress=progress, overwrite=force, adapt=config)
    typer.echo(
        f"wrote {report['stream']}: {report['bytes']} bytes, {report['bits_per_voxel']:.3f} bits/voxel, "
        f"PSNR {_fmt_db(report['psnr'])} (quality {report['quality']}); report in {report['sidecar']}"
    )
    bad = {k: v for k, v in report.get("nonfinite_voxels", {}).items() if v}
    if bad:
        typer.echo("kept exactly: " + ", ".join(f"{v} {k}" for k, v in bad.items()) + " voxels")


@app.command()
def decompress(
    src: Annotated[Path, typer.Argument(metavar="IN.mgpu", help="Stream written by `medgpu compress`.", show_default=False)],
    out: Annotated[Optional[str], typer.Option("--output", "-o", metavar="OUT", help="Output NIfTI file (.nii/.nii.gz), or folder for --to dicom (default: IN with .nii.gz, or IN_dicom/).", show_default=False)] = None,
    to: Annotated[Optional[str], typer.Option("--to", metavar="nifti|dicom", help="Output format (default: nifti, or dicom when OUT is a folder).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file (or a folder holding only .dcm files).")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Decode a .mgpu stream to NIfTI, or with --to dicom to a new DICOM series (lossy attributes set)."""
    from medgpu import api
    from medgpu.errors import OptionError

    if to is not None and to.strip().lower() not in api.OUTPUT_FORMATS:
        raise OptionError(f"--to must be nifti or dicom, got {to!r}")
    if out is None:
        dicom = to is not None and to.strip().lower() == "dicom"
        out = str(api.default_dicom_dir(src) if dicom else api.default_nifti_path(src))
    with _progress(not no_progress) as progress:
        volume = api.decompress(src, out, to=to, device=device, progress=progress, overwrite=force)
    target = Path(volume.path)
    if target.is_dir():
        count = sum(1 for p in target.iterdir() if p.name.lower().endswith(".dcm"))
        typer.echo(f"wrote {count} DICOM file{'s' if count != 1 else ''} to {target}")
    else:
        typer.echo(f"wrote {target}")


@app.command()
def info(
    src: Annotated[Path, typer.Argument(metavar="IN.mgpu", help="Stream to describe.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe a .mgpu stream: codec, geometry, size and (from the sidecar) quality report."""
    from medgpu import api
    from medgpu.bitstream.sidecar import to_json_safe

    meta = api.info(src)
    if as_json:
        typer.echo(json.dumps(to_json_safe(meta), indent=2))
        return
    report = meta.get("report") or {}
    rows = [
        ("file", meta["path"]),
        ("codec", f"{meta['codec_id']} (weights sha256 {meta['weights_sha256'][:16]}…)"),
        ("quality", meta["quality"]),
        ("shape", " x ".join(str(s) for s in meta["shape"]) + f"  {meta['dtype']}, slice axis {meta['slice_axis']}"),
        ("GoPs", meta["num_gops"]),
        ("size", f"{meta['bytes']} bytes, {meta['bits_per_voxel']:.3f} bits/voxel"),
    ]
    if "psnr" in report:
        rows.append(("PSNR", _fmt_db(report["psnr"]) + " (over the original data range)"))
        per = [p for p in report.get("psnr_per_slice", []) if p != float("inf")]
        if per:
            rows.append(("per slice", f"min {min(per):.2f} dB, max {max(per):.2f} dB"))
    if "encode_seconds" in report:
        rows.append(("timings", f"encode {report['encode_seconds']:.2f} s, decode {report['decode_seconds']:.2f} s"))
    if meta.get("sidecar") is None:
        rows.append(("report", "no sidecar found (.mgpu.json)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:>{width}}: {value}")


@app.command()
def bench(
    volumes: Annotated[list[Path], typer.Argument(metavar="VOLUME...", help="NIfTI files, DICOM files or DICOM series folders.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for results.csv, results.json and rd_curves.png.")] = Path("medgpu-bench"),
    qualities: Annotated[Optional[list[str]], typer.Option("--qualities", metavar="Q,Q,...", help="medgpu quality indices, comma-separated (default 0,16,32,48,63).", show_default=False)] = None,
    codecs: Annotated[Optional[list[str]], typer.Option("--codecs", metavar="CODEC,...", help="Comma-separated: medgpu, jpeg2000, x265, htj2k, jpegxl, jpegls, av1 (default: all installed).", show_default=False)] = None,
    gop: Annotated[int, typer.Option("--gop", help="medgpu slices per GoP.")] = 30,
    slice_axis: Annotated[Optional[int], typer.Option("--slice-axis", help="Axis coded as frames, for every codec (default: the one with the largest spacing).", show_default=False)] = None,
    max_slices: Annotated[Optional[int], typer.Option("--max-slices", help="Keep this many central slices of each volume.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (medgpu).")] = "auto",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="medgpu checkpoint instead of the shipped weights.", show_default=False)] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="medgpu with seeded random weights (plumbing check; numbers are meaningless).")] = False,
    no_lossless: Annotated[bool, typer.Option("--no-lossless", help="Skip the lossless reference points of the classical codecs.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Rate-distortion benchmark of medgpu against JPEG 2000, HTJ2K, JPEG XL, JPEG-LS, HEVC and AV1 on the same voxels."""
    from rich.console import Console

    from medgpu import bench as bench_mod
    from medgpu.errors import OptionError

    def split(values: Optional[list[str]]) -> Optional[list[str]]:
        return None if values is None else [v.strip() for item in values for v in item.split(",") if v.strip()]

    try:
        quality_list = [int(q) for q in split(qualities)] if qualities is not None else list(bench_mod.DEFAULT_QUALITIES)
    except ValueError:
        raise OptionError(f"--qualities must be integers, got {','.join(qualities or [])!r}") from None
    options: dict[str, Any] = dict(qualities=quality_list, codecs=split(codecs), lossless=not no_lossless, gop=gop,
                                   slice_axis=slice_axis, max_slices=max_slices, device=device,
                                   weights=str(weights) if weights else None, random_weights=random_weights)
    err = Console(stderr=True)
    if no_progress or not err.is_terminal:
        result = bench_mod.run_bench(volumes, out, **options)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TextColumn("points"),
                      TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("bench", total=None)
            result = bench_mod.run_bench(volumes, out, progress=lambda d, n, t: bar.update(
                task, description=d[:28], completed=n, total=t), **options)
    console = Console() if Console().is_terminal else Console(width=160)
    for table in bench_mod.render_tables(result):
        console.print(table)
    for codec, why in result.skipped.items():
        typer.echo(f"skipped {codec}: {why}", err=True)
    written = [p for p in (result.csv_path, result.json_path, result.plot_path) if p is not None]
    typer.echo("wrote " + ", ".join(str(p) for p in written))


@app.command()
def archive(
    paths: Annotated[list[Path], typer.Argument(metavar="[SRC] DEST", help="Folder tree or CSV manifest of paths, then the archive folder (only DEST with --from-pacs). Re-running resumes.", show_default=False)],
    from_pacs: Annotated[Optional[str], typer.Option("--from-pacs", metavar="HOST:PORT", help="Query and retrieve from this DICOM node instead of SRC.", show_default=False)] = None,
    aet: Annotated[str, typer.Option("--aet", help="Our (calling) AE title.")] = "MEDGPU",
    aec: Annotated[str, typer.Option("--aec", help="The node's (called) AE title.")] = "ANY-SCP",
    query: Annotated[Optional[list[str]], typer.Option("--query", metavar="KEY=VALUE", help="C-FIND matching key, e.g. PatientID=123 (repeatable).", show_default=False)] = None,
    retrieve: Annotated[str, typer.Option("--retrieve", help="get (C-GET) or move (C-MOVE to --aet on --move-port).")] = "get",
    move_port: Annotated[Optional[int], typer.Option("--move-port", help="Port we listen on for C-MOVE.", show_default=False)] = None,
    quality: QualityOpt = None,
    gop: Annotated[int, typer.Option("--gop", help="Slices per group of pictures (GoP).")] = 30,
    slice_axis: Annotated[Optional[int], typer.Option("--slice-axis", help="Axis coded as frames (default: the one with the largest spacing).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", help="Local worker processes (default: one per core, at most 8; 0: in this process). With --dask: LocalCluster size.", show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Torch threads per task (default: cores / workers).", show_default=False)] = None,
    dask: Annotated[bool, typer.Option("--dask", help="Run on a Dask LocalCluster (or on --scheduler).")] = False,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786.", show_default=False)] = None,
    retries: Annotated[int, typer.Option("--retries", help="Retries of transient failures per series (exponential backoff).")] = 2,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Codec weights file (default: the shipped weights).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Archive every series of a folder tree, a manifest or a PACS query: compress, verify, resume."""
    from medgpu.archive import CodecSpec, PacsNode
    from medgpu.archive import archive as run_archive
    from medgpu.archive.pacs import parse_query
    from medgpu.archive.progress import rich_progress
    from medgpu.bitstream.sidecar import to_json_safe
    from medgpu.errors import OptionError

    if len(paths) != (1 if from_pacs else 2):
        raise OptionError("give DEST with --from-pacs, else SRC and DEST")
    src, dest = (None, paths[0]) if from_pacs else (paths[0], paths[1])
    node = PacsNode.parse(from_pacs, aet=aet, aec=aec) if from_pacs else None
    spec = CodecSpec(weights=str(weights)) if weights is not None else CodecSpec()
    with rich_progress(not no_progress and not as_json) as progress:
        summary = run_archive(src, dest, pacs=node, query=parse_query(query or []), retrieve=retrieve,
                              move_port=move_port, quality=quality, gop=gop, slice_axis=slice_axis, device=device,
                              workers=workers, threads=threads, dask=dask, scheduler=scheduler, retries=retries,
                              codec=spec, progress=progress)
    counts = summary["counts"]
    if as_json:
        typer.echo(json.dumps(to_json_safe({k: v for k, v in summary.items() if k != "series"}), indent=2))
    else:
        ratio = f"{summary['total_ratio']:.2f}:1" if summary["total_ratio"] else "n/a"
        psnr = f", PSNR min {_fmt_db(summary['psnr_min'])}" if summary["psnr_min"] is not None else ""
        typer.echo(f"{dest}: {counts['done']} of {counts['series']} series archived ({summary['this_run']['archived']} "
                   f"in this run), {counts['skipped']} skipped, {counts['failed']} failed; ratio {ratio}{psnr}")
        for p in summary["problems"]:
            typer.echo(f"  {p['state']}: {p['source'] or p['key']}: {p['error']}")
        typer.echo(f"summary in {dest / 'summary.csv'} and {dest / 'summary.json'}")
    if counts["failed"] or counts["pending"]:
        from medgpu.errors import MedgpuError

        raise MedgpuError(f"{counts['failed'] + counts['pending']} series not archived; re-run the same command to retry them")


@app.command()
def restore(
    archive_dir: Annotated[Path, typer.Argument(metavar="ARCHIVE", help="Folder written by `medgpu archive`.", show_default=False)],
    out: Annotated[Optional[Path], typer.Argument(metavar="[OUT]", help="Output folder (not needed with --to-pacs).", show_default=False)] = None,
    to: Annotated[str, typer.Option("--to", help="nifti, or dicom (a new lossy series per stream).")] = "nifti",
    to_pacs: Annotated[Optional[str], typer.Option("--to-pacs", metavar="HOST:PORT", help="Send each decoded series to this DICOM node (C-STORE).", show_default=False)] = None,
    aet: Annotated[str, typer.Option("--aet", help="Our (calling) AE title.")] = "MEDGPU",
    aec: Annotated[str, typer.Option("--aec", help="The node's (called) AE title.")] = "ANY-SCP",
    series: Annotated[Optional[list[str]], typer.Option("--series", help="Only this series: key, Series UID, source path or stream name (repeatable).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Codec weights file (default: those the archive was written with).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Decode an archive back to NIfTI or DICOM files, or to a PACS."""
    from medgpu.archive import CodecSpec, PacsNode
    from medgpu.archive import restore as run_restore
    from medgpu.archive.progress import rich_progress
    from medgpu.errors import MedgpuError, OptionError

    if to_pacs is None and out is None:
        raise OptionError("give an output folder OUT or --to-pacs HOST:PORT")
    node = PacsNode.parse(to_pacs, aet=aet, aec=aec) if to_pacs else None
    spec = CodecSpec(weights=str(weights)) if weights is not None else None
    with rich_progress(not no_progress, label="restoring") as progress:
        result = run_restore(archive_dir, out, to="dicom" if node else to, pacs=node, series=series, overwrite=force,
                             device=device, codec=spec, progress=progress)
    where = f"DICOM node {node}" if node else str(out)
    typer.echo(f"restored {len(result['restored'])} series to {where}"
               + (f"; {len(result['exists'])} already there (use --force to replace)" if result["exists"] else ""))
    for item in result["failed"]:
        typer.echo(f"  failed: {item['key']}: {item['error']}")
    if result["failed"]:
        raise MedgpuError(f"{len(result['failed'])} series could not be restored")


def main() -> None:
    """Entry point for ``python -m medgpu``."""
    app(prog_name="medgpu")

"""``medgpu`` command line: parse, call :mod:`medgpu.api`, print.

Heavy imports (torch, MONAI, nibabel) happen inside the commands, so ``medgpu --help`` is
instant. Every failure is one line on stderr and a non-zero exit, never a traceback
(set ``MEDGPU_DEBUG=1`` to see the traceback of an unexpected error).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

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
        try:
            with _quiet_libraries():
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
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
    """A rich progress bar on stderr, one step per GoP; None when stderr is not a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("GoPs"), TimeElapsedColumn(), console=console, transient=False) as bar:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _fmt_db(value: Any) -> str:
    return "lossless (inf dB)" if value == float("inf") else f"{value:.2f} dB"


QualityOpt = Annotated[Optional[int], typer.Option("--quality", "-q", help="Quality index 0..63 (higher: more bits, higher PSNR). Default: tuned for about 45 dB on typical CT/MR.", show_default=False)]


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
) -> None:
    """Compress a volume to OUT.mgpu plus an OUT.mgpu.json sidecar with the report."""
    from medgpu import api

    with _progress(not no_progress) as progress:
        report = api.compress(src, out, quality=quality, gop=gop,
                              slice_axis=slice_axis, device=device, progress=progress, overwrite=force)
    typer.echo(
        f"wrote {report['stream']}: {report['bytes']} bytes, {report['bits_per_voxel']:.3f} bits/voxel, "
        f"PSNR {_fmt_db(report['psnr'])} (quality {report['quality']}); report in {report['sidecar']}"
    )


@app.command()
def decompress(
    src: Annotated[Path, typer.Argument(metavar="IN.mgpu", help="Stream written by `medgpu compress`.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="OUT.nii.gz", help="Output NIfTI (default: IN with .nii.gz).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Decode a .mgpu stream to NIfTI (same shape, affine, codes, dtype and header fields)."""
    from medgpu import api

    target = api.default_nifti_path(src) if out is None else out
    with _progress(not no_progress) as progress:
        api.decompress(src, target, device=device, progress=progress, overwrite=force)
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


def main() -> None:
    """Entry point for ``python -m medgpu``."""
    app(prog_name="medgpu")

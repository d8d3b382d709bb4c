"""Rate-distortion plots for the evaluation pipeline (matplotlib, Agg backend)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLE = {
    "medgpu": dict(color="tab:red", marker="o", lw=2.0),
    "jpeg2000": dict(color="tab:blue", marker="s", lw=1.3),
    "x265": dict(color="tab:green", marker="^", lw=1.3),
    "htj2k": dict(color="tab:cyan", marker="v", lw=1.0),
    "jpegxl": dict(color="tab:purple", marker="D", lw=1.0),
    "jpegls": dict(color="tab:brown", marker="x", lw=1.0),
    "av1": dict(color="tab:olive", marker="P", lw=1.0),
}


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def plot_rd_curves(
    rows: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    codecs: Sequence[str] | None = None,
    ncols: int = 3,
) -> Path:
    """One PSNR-vs-bits-per-voxel panel per volume (log rate axis); returns the PNG path.

    ``rows`` are result rows with keys ``volume``, ``codec``, ``bits_per_voxel``, ``psnr``.
    Lossless points (infinite PSNR) are left out of the curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    if codecs is None:
        codecs = list(dict.fromkeys(r["codec"] for r in rows))
    n = max(1, len(volumes))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax, vol in zip(axes.flat, volumes):
        for codec in codecs:
            pts = sorted(
                (float(r["bits_per_voxel"]), float(r["psnr"]))
                for r in rows
                if r["volume"] == vol and r["codec"] == codec
                and _finite(r.get("psnr")) and _finite(r.get("bits_per_voxel")) and float(r["bits_per_voxel"]) > 0
            )
            if not pts:
                continue
            style = _STYLE.get(codec, dict(marker=".", lw=1.0))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=codec, ms=4, **style)
        ax.set_xscale("log")
        ax.set_title(vol, fontsize=9)
        ax.set_xlabel("bits per voxel")
        ax.set_ylabel("PSNR [dB] (data range)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

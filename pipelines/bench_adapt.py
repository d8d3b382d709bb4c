#!/usr/bin/env python
"""Content-adaptive encoding benchmark (issue: group-aware parameter-efficient updating).

On the first GoP of each chosen val volume (centre crop of at most --size pixels, so the
CPU run stays bounded), codes the GoP at several qualities with:

  none        the stock encoder
  adapters    adapters updated on the whole GoP (the method)
  full        every encoder-side parameter updated (paper ablation)
  frames1/10/20  adapters updated on the first 1, 10 or 20 frames only (paper ablation)

and measures real stream bytes (bits per voxel), PSNR over the volume's original data
range, update seconds and seconds per epoch; BD-rate of each variant against `none`.
Also: trainable parameter counts, peak memory (RSS) of an update against patch size on a
512x512 GoP, and carry-over vs reset of the adapters across the GoPs of one volume.

    python pipelines/bench_adapt.py                       # writes docs/adapt/ and docs/adaptation.md
    python pipelines/bench_adapt.py --quick               # tiny smoke run into runs/adapt_quick/
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medgpu.adapt import AdaptConfig, adapt_encoder, adapter_parameters, update_gop  # noqa: E402
from medgpu.adapt.online import encode_adapted_gop, rd_cost  # noqa: E402
from medgpu.adapt.adapters import encoder_side_parameter_count  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402
from medgpu.framing import plan_for_volume, split_gops  # noqa: E402
from medgpu.intensity import IntensityMapping  # noqa: E402
from medgpu.io import load_volume  # noqa: E402
from medgpu.metrics import bd_rate, data_range, psnr  # noqa: E402

VAL = ROOT.parent / "shared" / "data" / "val"
DEFAULT_VOLUMES = ("ct_chest_radiomics_lung1.nii.gz", "us_echo_octave_10f.dcm", "mr_breast_radiomics_breast1.nii.gz",
                   "mr_epi_pycortex_S1_fullhead_ref.nii.gz", "mr_epi_dipy_aniso_vox.nii.gz",
                   "mr_fmri_nibabel_example4d.nii.gz", "mr_head_emri_small_10f.dcm")
"""Every val volume, those least like the training data (CT, ultrasound, breast MR) first."""
VARIANTS = {
    "none": None,
    "adapters": {},
    "full": {"scope": "full"},
    "frames1": {"frames": 1},
    "frames10": {"frames": 10},
    "frames20": {"frames": 20},
}


def cropped_gops(path: Path, size: int, gop: int) -> tuple[list[np.ndarray], IntensityMapping, float]:
    """The GoPs of a volume (centre crop of at most ``size`` pixels), its mapping and peak."""
    vol = load_volume(path)
    out = []
    for frames in split_gops(vol.array, plan_for_volume(vol, gop=gop)):
        h, w = frames.shape[1:]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append(frames[:, top : top + size, left : left + size])
    return out, IntensityMapping.fit(vol.array), data_range(vol.array)


def first_gop(path: Path, size: int, gop: int) -> tuple[torch.Tensor, IntensityMapping, np.ndarray, float]:
    """Frames [T,1,h,w] in [0,1] of the first GoP (centre crop), its mapping, originals, peak."""
    gops, mapping, peak = cropped_gops(path, size, gop)
    return torch.from_numpy(mapping.forward(gops[0])).unsqueeze(1), mapping, gops[0], peak


def code(codec, x, q, mapping, original, peak, cfg: AdaptConfig | None, mode: str):
    """One coded point of the adapted (or stock) encoder as it is, without the product's
    fallback to the stock stream: (bits per voxel, PSNR, update seconds, report with the
    real RD cost ``rd_cost`` of the stream)."""
    model, rep = (None, {"seconds": 0.0})
    if cfg is not None:
        with torch.enable_grad():
            model, rep = update_gop(codec.intra, codec.inter, x, q, cfg)
    payload, recon = codec.encode_gop_with_recon(x, q, inter=model, mode=mode)
    rep["rd_cost"] = rd_cost(x, recon, payload, q)
    decoded = mapping.inverse(recon[:, 0].numpy())
    return 8 * len(payload) / original.size, psnr(original, decoded, peak), rep.get("seconds", 0.0), rep


def time_adaptive_encode(codec, x: torch.Tensor, q: int, cfg: AdaptConfig) -> tuple[float, dict]:
    """Wall seconds of one adaptive encode in the product's mode (update, then stock and adapted
    coding, the cheaper kept) and its report."""
    t = time.time()
    _, _, rep = encode_adapted_gop(codec, x, q, cfg)
    return time.time() - t, rep


def rd_change_by_epoch(codec, x: torch.Tensor, q: int, epochs: list[int]) -> tuple[dict[int, float], Callable]:
    """(curve, on_epoch hook for ``update_gop``): after each epoch in ``epochs`` the hook codes
    ``x`` (forced P-frames) with the model being trained and records in ``curve`` the real
    RD-cost change (%) against the stock encoder."""
    stock, recon = codec.encode_gop_with_recon(x, q, mode="p")
    base, curve = rd_cost(x, recon, stock, q), {}

    def on_epoch(epoch: int, model) -> None:
        if epoch in epochs:
            payload, rec = codec.encode_gop_with_recon(x, q, inter=model, mode="p")
            curve[epoch] = round(100 * (rd_cost(x, rec, payload, q) / base - 1), 3)

    return curve, on_epoch


EPOCH_REPEATS = 3
EPOCH_VARIANTS = {"adapters": ({}, None), "full": ({"scope": "full"}, None)}
"""Timed update variants: name -> (AdaptConfig fields, autocast dtype or None)."""


def timings(codec, x: torch.Tensor, q: int, variants: dict = EPOCH_VARIANTS, repeats: int = EPOCH_REPEATS) -> dict:
    """Seconds per update epoch of each variant (best of ``repeats``, alternating: less exposed to
    the machine's other load; on CUDA also the peak memory) and the whole adaptive encode with
    default settings (update + stock and adapted coding, product mode) against a plain encode."""
    cuda = codec.device.type == "cuda"
    out = {"frames": x.shape[0], "height": x.shape[2], "width": x.shape[3], "quality": q, "epoch_repeats": repeats}
    for _ in range(repeats):
        for name, (kw, amp) in variants.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with torch.enable_grad(), torch.autocast(codec.device.type, dtype=amp, enabled=amp is not None):
                _, rep = update_gop(codec.intra, codec.inter, x, q, AdaptConfig(steps=1, **kw))
            key = f"seconds_per_epoch_{name}"
            out[key] = min(out.get(key, float("inf")), rep["seconds_per_epoch"])
            out[f"training_loss_{name}"] = rep["training_loss_per_epoch"][0]
            if cuda:
                out[f"peak_gpu_mib_{name}"] = torch.cuda.max_memory_allocated() / 2**20
                torch.cuda.synchronize()
    t = time.time()
    codec.encode_gop(x, q)
    out["plain_encode_seconds"] = time.time() - t
    out["adaptive_encode_seconds"], rep = time_adaptive_encode(codec, x, q, AdaptConfig())
    out["adaptive_report"] = {k: rep[k] for k in ("rd_cost_before", "rd_cost_after", "used", "update_seconds")}
    return out


MEMORY_LIMIT_GIB = 16


def _limit_memory() -> None:  # pragma: no cover - runs in the child process
    import resource

    cap = MEMORY_LIMIT_GIB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def peak_memory(patch: int, steps: int = 1) -> float:
    """Peak RSS (MiB) of one update epoch on a 30x512x512 GoP with the given patch size, in a
    fresh process whose address space is capped at ``MEMORY_LIMIT_GIB`` (so a patch size that
    needs more fails there, as NaN, instead of pushing the machine into the OOM killer)."""
    script = (
        "import torch\n"
        "from medgpu.bench import peak_rss_mib\n"
        "from medgpu.codec import load_codec\n"
        "from medgpu.adapt import AdaptConfig, update_gop\n"
        "c = load_codec()\n"
        "x = torch.rand(30, 1, 512, 512) * 0.1 + 0.45\n"
        f"update_gop(c.intra, c.inter, x, 42, AdaptConfig(steps={steps}, patch={patch}))\n"
        "print(peak_rss_mib())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT),
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=_limit_memory)
    if out.returncode != 0:
        print(f"patch {patch}: failed under the {MEMORY_LIMIT_GIB} GiB cap: {out.stderr.strip().splitlines()[-1:]}")
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


MIN_PSNR_SPAN_DB = 1.0


def _points(rows: list[dict]) -> list[tuple[str, int]]:
    """(volume, quality) of the stock points, in run order."""
    return [(r["volume"], r["quality"]) for r in rows if r["variant"] == "none"]


def rd_cost_changes(rows: list[dict]) -> dict[str, list[float]]:
    """Per variant, the % change of the real RD cost against the stock point of each (volume, quality)."""
    base = {(r["volume"], r["quality"]): r["rd_cost"] for r in rows if r["variant"] == "none"}
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["variant"] != "none":
            out.setdefault(r["variant"], []).append(100 * (r["rd_cost"] / base[(r["volume"], r["quality"])] - 1))
    return out


def psnr_span(rows: list[dict], volume: str) -> float:
    """max - min PSNR of the stock encoder's points of ``volume``."""
    p = [r["psnr"] for r in rows if r["volume"] == volume and r["variant"] == "none"]
    return max(p) - min(p) if p else float("nan")


def write_markdown(result: dict, path: Path) -> None:
    """Tables of the run into ``path`` (between markers, so hand-written text survives)."""
    rows, args = result["rows"], result["settings"]
    lines = [f"Run: `python pipelines/bench_adapt.py` (mode `{args['mode']}`, {args['steps']} epochs, patch "
             f"{args['patch']}, GoP {args['gop']}, centre crop <= {args['size']} px), {result['cpu']}-core CPU, "
             f"{result['threads']} torch threads.", "",
             "Learning rates: " + ", ".join(f"{k} {v:g}" for k, v in result.get("learning_rates", {}).items())
             + ". Variants are measured as they code, without the product's fallback to the stock stream "
             "(`encode_adapted_gop` keeps whichever of the two streams has the lower real RD cost).", "",
             "### Real RD cost against no updating (the objective the update minimises)", "",
             "lambda(q) x MSE + bits per voxel of the real stream, change against the stock encoder at the "
             "same quality; negative = better.", "",
             ]
    changes = rd_cost_changes(rows)
    lines += ["| volume | quality | " + " | ".join(changes) + " |", "|---|---|" + "---|" * len(changes)]
    for i, (volume, q) in enumerate(_points(rows)):
        lines.append(f"| {volume.split('.')[0]} | {q} | " + " | ".join(f"{c[i]:+.1f} %" for c in changes.values()) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{sum(c) / len(c):+.2f} %**" for c in changes.values()) + " |")
    span = {v: psnr_span(rows, v) for v in dict.fromkeys(r["volume"] for r in rows)}
    lines += ["", "### BD-rate against no updating (negative = fewer bits at equal PSNR)", "",
              f"BD-rate needs PSNR that rises with the rate. Volumes whose stock PSNR spans less than "
              f"{MIN_PSNR_SPAN_DB:g} dB over the qualities give ill-conditioned BD-rates: they are listed but "
              "left out of the mean.", "",
              "| volume | stock PSNR span (dB) | variant | BD-rate |", "|---|---|---|---|"]
    by: dict[str, list[float]] = {}
    for b in result["bd_rate"]:
        v, sp = b["bd_rate"], span[b["volume"]]
        lines.append(f"| {b['volume']} | {sp:.2f} | {b['variant']} | {'n/a' if v != v else f'{v:+.2f} %'} |")
        by.setdefault(b["variant"], [])
        if v == v and sp >= MIN_PSNR_SPAN_DB:
            by[b["variant"]].append(v)
    lines += ["", "| variant | mean BD-rate over well-conditioned volumes |", "|---|---|"]
    lines += [f"| {k} | {f'{sum(v) / len(v):+.2f} %' if v else 'n/a'} ({len(v)} volumes) |" for k, v in by.items()]
    lines += ["", "### Every point", "", "| volume | frames | size | variant | quality | bits/voxel | PSNR (dB) | "
              "real RD cost | update s | s/epoch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spe = r["seconds_per_epoch"]
        lines.append(f"| {r['volume']} | {r['frames']} | {r['height']}x{r['width']} | {r['variant']} | {r['quality']} | "
                     f"{r['bpv']:.4f} | {r['psnr']:.2f} | {r['rd_cost']:.4f} | {r['update_seconds']:.1f} | "
                     f"{'' if spe is None else f'{spe:.2f}'} |")
    p = result["parameters"]
    lines += ["", "### Parameters", "", f"Adapters: {p['adapters']:,} trainable parameters = {100 * p['share']:.2f} % "
              f"of the {p['encoder_side']:,} encoder-side parameters (full update: all of them).", ""]
    tm = result.get("timing")
    if tm:
        lines += [f"### Time on a {tm['frames']}x{tm['height']}x{tm['width']} CT GoP (quality {tm['quality']}, "
                  f"{result['threads']} torch threads)", "",
                  "| what | seconds |", "|---|---|",
                  f"| one update epoch, adapters (best of {tm.get('epoch_repeats', 1)}, alternating) | "
                  f"{tm['seconds_per_epoch_adapters']:.1f} |",
                  f"| one update epoch, full encoder update (best of {tm.get('epoch_repeats', 1)}) | "
                  f"{tm['seconds_per_epoch_full']:.1f} |",
                  f"| plain encode (no adaptation) | {tm['plain_encode_seconds']:.1f} |",
                  f"| adaptive encode, default settings (update + stock and adapted coding) | "
                  f"{tm['adaptive_encode_seconds']:.1f} |", ""]
        ar = tm.get("adaptive_report")
        if ar:
            lines += [f"The timed adaptive encode runs in the product's mode (per-frame I/P decision): real RD cost "
                      f"stock {ar['rd_cost_before']:.4f}, adapted {ar['rd_cost_after']:.4f}, kept: {ar['used']}.", ""]
    if result["peak_memory_mb"]:
        lines += ["### Peak memory of one update epoch on a 30x512x512 GoP (RSS, MiB)", "",
                  "| patch | peak RSS |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" if v == v else f"| {k} | over {result.get('memory_limit_gib', MEMORY_LIMIT_GIB)} GiB "
                  "(the update failed under that address-space cap) |" for k, v in result["peak_memory_mb"].items()]
        lines.append("")
    if result["carry"]:
        lines += [f"### Carry-over vs reset of adapters across the GoPs of the CT (quality 42, mode `{args['mode']}`, "
                  "the cheaper of stock and adapted stream per GoP as the product keeps it)", "",
                  "| start of each GoP | bits/voxel | PSNR (dB) | mean real RD cost per GoP |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['bpv']:.4f} | {v['psnr']:.2f} | {v['rd_cost']:.4f} |" for k, v in result["carry"].items()]
        lines.append("")
    begin, end = "<!-- BEGIN generated by pipelines/bench_adapt.py -->", "<!-- END generated by pipelines/bench_adapt.py -->"
    text = path.read_text() if path.exists() else "# Content-adaptive encoding\n\n"
    block = begin + "\n" + "\n".join(lines) + "\n" + end
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", default=str(VAL))
    ap.add_argument("--volumes", default=",".join(DEFAULT_VOLUMES))
    ap.add_argument("--qualities", default="21,42,63")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--gop", type=int, default=30)
    ap.add_argument("--steps", type=int, default=AdaptConfig.steps)
    ap.add_argument("--patch", type=int, default=AdaptConfig.patch)
    ap.add_argument("--memory-patches", default="64,128,256,512")
    ap.add_argument("--timing-size", type=int, default=256, help="crop of the CT GoP timed (0: skip)")
    ap.add_argument("--carry", action="store_true", help="also compare carry-over vs reset across GoPs")
    ap.add_argument("--mode", choices=["p", "auto"], default="p",
                    help="p: every frame after the first is a P-frame (the paper's IPPP setting); "
                         "auto: the product's per-frame I/P decision")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="rewrite docs/adaptation.md and the plot from OUT/results.json without measuring")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.size, args.gop, args.steps, args.qualities, args.memory_patches = 64, 4, 1, "21,63", ""
        args.timing_size = 64
        args.volumes = "mr_breast_radiomics_breast1.nii.gz"
    out = Path(args.out or (ROOT / ("runs/adapt_quick" if args.quick else "docs/adapt")))
    out.mkdir(parents=True, exist_ok=True)
    if args.render:  # tables and plot again from a finished run, nothing measured
        result = json.loads((out / "results.json").read_text())
        write_markdown(result, ROOT / "docs" / "adaptation.md")
        s = result["settings"]
        return plot(result["rows"], s["volumes"].split(","), s["variants"].split(","), out)
    codec = load_codec()
    qualities = [int(q) for q in args.qualities.split(",")]
    variants = args.variants.split(",")
    rows = []
    for name in args.volumes.split(","):
        x, mapping, original, peak = first_gop(Path(args.val) / name, args.size, args.gop)
        for variant in variants:
            kw = VARIANTS[variant]
            cfg = None if kw is None else AdaptConfig(steps=args.steps, patch=args.patch, **kw)
            for q in qualities:
                t = time.time()
                bpv, p, secs, rep = code(codec, x, q, mapping, original, peak, cfg, args.mode)
                rows.append({"volume": name, "frames": x.shape[0], "height": x.shape[2], "width": x.shape[3],
                             "variant": variant, "quality": q, "bpv": bpv, "psnr": p, "update_seconds": secs,
                             "seconds_per_epoch": rep.get("seconds_per_epoch"), "total_seconds": time.time() - t,
                             "rd_cost": rep["rd_cost"], "training_loss_per_epoch": rep.get("training_loss_per_epoch")})
                print(json.dumps(rows[-1]), flush=True)
    # BD-rate of each variant against no updating
    bd = []
    for name in args.volumes.split(","):
        base = [r for r in rows if r["volume"] == name and r["variant"] == "none"]
        for variant in variants:
            if variant == "none":
                continue
            test = [r for r in rows if r["volume"] == name and r["variant"] == variant]
            if base and test:
                bd.append({"volume": name, "variant": variant,
                           "bd_rate": bd_rate([r["bpv"] for r in base], [r["psnr"] for r in base],
                                              [r["bpv"] for r in test], [r["psnr"] for r in test])})
    adapted = adapt_encoder(codec.inter)
    params = {"adapters": sum(p.numel() for p in adapter_parameters(adapted)),
              "encoder_side": encoder_side_parameter_count(codec.inter)}
    params["share"] = params["adapters"] / params["encoder_side"]
    memory = {int(p): peak_memory(int(p)) for p in args.memory_patches.split(",") if p}
    timing = {}
    if args.timing_size:
        xt = first_gop(Path(args.val) / "ct_chest_radiomics_lung1.nii.gz", args.timing_size, args.gop)[0]
        timing = timings(codec, xt, 42)
        print(json.dumps(timing), flush=True)
    carry = {}
    if args.carry:
        gops, mapping, peak = cropped_gops(Path(args.val) / "ct_chest_radiomics_lung1.nii.gz", args.size, args.gop)
        from compare_carry_over import encode_volume

        for carry_over in (False, True):
            cfg = AdaptConfig(steps=args.steps, patch=args.patch, carry_over=carry_over)
            gop_rows, payloads = encode_volume(codec, gops, mapping, 42, cfg, args.mode)
            decoded = [mapping.inverse(codec.decode_gop(payload, f.shape[0], *f.shape[1:], 42)[:, 0].numpy())
                       for payload, f in zip(payloads, gops)]
            o, d = np.concatenate(gops), np.concatenate(decoded)
            carry["carry_over" if carry_over else "reset"] = {
                "bpv": 8 * sum(map(len, payloads)) / o.size, "psnr": psnr(o, d, peak),
                "rd_cost": sum(r["kept"] for r in gop_rows) / len(gop_rows)}
    result = {"rows": rows, "bd_rate": bd, "parameters": params, "peak_memory_mb": memory, "carry": carry,
              "timing": timing, "memory_limit_gib": MEMORY_LIMIT_GIB,
              "learning_rates": {v: AdaptConfig(steps=args.steps, patch=args.patch, **VARIANTS[v]).learning_rate
                                 for v in variants if VARIANTS[v] is not None},
              "settings": vars(args), "threads": torch.get_num_threads(), "cpu": os.cpu_count()}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("bd_rate", "parameters", "peak_memory_mb", "carry", "timing")}, indent=2))
    if not args.quick:
        write_markdown(result, ROOT / "docs" / "adaptation.md")
    return plot(rows, args.volumes.split(","), variants, out)


def plot(rows: list[dict], names: list[str], variants: list[str], out: Path) -> int:
    """RD curves of every variant, one panel per volume, into ``out/rd_adaptation.png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = min(4, len(names))
        nrows = -(-len(names) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.8 * nrows), squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, names):
            for variant in variants:
                pts = sorted((r["bpv"], r["psnr"]) for r in rows if r["volume"] == name and r["variant"] == variant)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=variant)
            ax.set_title(name.split(".")[0], fontsize=9)
            ax.set_xlabel("bits per voxel")
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "rd_adaptation.png", dpi=110)
    except Exception as exc:  # noqa: BLE001 - a plot failure must not lose the numbers
        print(f"plot failed: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""CUDA checks and timings of the codec and of content-adaptive encoding (run where a GPU is lent).

    python pipelines/bench_cuda.py --val ../shared/data/val --out runs/cuda [--deadline 330]

Each part writes one JSON record to OUT/cuda.jsonl (and prints it) as soon as it is done, so a
run cut short by the deadline or an error still leaves what it measured:

  env          torch/CUDA/cuDNN versions and the GPU
  exactness    the integer entropy-parameter networks on CUDA against the CPU, bit for bit
               (our path, with cuDNN off, and plain cuDNN conv2d as a control)
  timings      seconds per update epoch (adapters, full, adapters under bf16 autocast),
               plain and adaptive encode of the first 30x256x256 GoP of the val CT (q42)
  determinism  a CUDA-coded stream decoded on the CPU and on CUDA, for cuDNN TF32 on and off:
               largest difference to the encoder's reconstruction; CPU-coded stream compared
  compress     ``medgpu.api.compress`` on CUDA with adaptation, val volumes, streams kept in OUT
               (decode them on another machine to check them there)
  budget       real RD-cost change of adapters and of the full update after 1..N epochs on
               128-pixel crops of val GoPs (forced P-frames, q42): what more update epochs buy

With ``--device cpu --quick`` it runs small on the CPU (a smoke test of the script).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "pipelines"))

from bench_adapt import EPOCH_VARIANTS, first_gop, rd_change_by_epoch, time_adaptive_encode  # noqa: E402
from bench_adapt import timings as bench_timings  # noqa: E402

from medgpu.adapt import AdaptConfig, update_gop  # noqa: E402
from medgpu.adapt.online import rd_cost  # noqa: E402
from medgpu.codec import load_codec  # noqa: E402
from medgpu.codec.intnet import ACT_BITS, MAX_WEIGHT, WEIGHT_BITS, ExactConv2d  # noqa: E402

CT = "ct_chest_radiomics_lung1.nii.gz"
BUDGET_VOLUMES = (CT, "us_echo_octave_10f.dcm", "mr_breast_radiomics_breast1.nii.gz")


class Recorder:
    """Appends JSON records to a file and stops parts once the deadline has passed."""

    def __init__(self, out: Path, deadline: float) -> None:
        self.path = out / "cuda.jsonl"
        self.end = time.time() + deadline

    def left(self) -> float:
        return self.end - time.time()

    def write(self, part: str, record: dict) -> None:
        line = json.dumps({"part": part, **record}, default=float)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)

    def run(self, part: str, fn, *args) -> None:
        if self.left() <= 0:
            self.write(part, {"skipped": "deadline"})
            return
        t = time.time()
        try:
            self.write(part, {**fn(*args), "part_seconds": round(time.time() - t, 1)})
        except Exception as exc:  # keep going: the other parts still measure something
            self.write(part, {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]})


def env(device: str) -> dict:
    out = {"torch": torch.__version__, "device": device}
    if device.startswith("cuda"):
        out.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return out


def exactness(device: str) -> dict:
    """Every ExactConv2d of the shipped codec on random integer activations: CPU vs ``device``."""
    cpu = load_codec(device="cpu")
    gen = torch.Generator().manual_seed(0)
    counts = {"layers": 0, "elements": 0, "ours_mismatch": 0, "cudnn_mismatch": 0}
    for net in (cpu.intra, cpu.inter):
        for layer in net.modules():
            if not isinstance(layer, ExactConv2d):
                continue
            cin = layer.weight.shape[1]
            x = torch.randint(-2**12, 2**12, (1, cin, 24, 24), generator=gen).double()
            ref = layer(x, exact=True)
            dev_layer = layer.to(device)
            ours = dev_layer(x.to(device), exact=True).cpu()
            w = torch.round(dev_layer.weight.detach().double() * 2**WEIGHT_BITS).clamp(-MAX_WEIGHT, MAX_WEIGHT)
            b = torch.round(dev_layer.bias.detach().double() * 2 ** (WEIGHT_BITS + ACT_BITS))
            with torch.backends.cudnn.flags(enabled=True, benchmark=True):  # the same sums through cuDNN
                acc = torch.nn.functional.conv2d(x.to(device), w, b, padding=layer.pad)
                plain = torch.floor(acc * 2.0**-WEIGHT_BITS).cpu()
            layer.to("cpu")
            counts["layers"] += 1
            counts["elements"] += ref.numel()
            counts["ours_mismatch"] += int((ours != ref).sum())
            counts["cudnn_mismatch"] += int((plain != ref).sum())
    return counts


def timings(codec, x: torch.Tensor, device: str, quick: bool) -> dict:
    """``bench_adapt.timings`` (epochs best of 3, plain and adaptive encode) after a warm-up; on CUDA
    also an adapters variant and an adaptive encode under bf16 autocast (the coding passes ignore
    it: ``medgpu.codec.gop.float32_coding``)."""
    q = 42
    with torch.enable_grad():  # warm-up: cuDNN plans, allocator
        update_gop(codec.intra, codec.inter, x[:3], q, AdaptConfig(steps=1))
    variants = dict(EPOCH_VARIANTS)
    if device.startswith("cuda"):
        variants["adapters_bf16"] = ({}, torch.bfloat16)
    out = bench_timings(codec, x, q, variants, 1 if quick else 3)
    if device.startswith("cuda"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            seconds, rep = time_adaptive_encode(codec, x, q, AdaptConfig())
        out["adaptive_encode_seconds_bf16"] = seconds
        out["adaptive_report_bf16"] = {k: rep[k] for k in ("rd_cost_before", "rd_cost_after", "used", "update_seconds")}
    return out


def determinism(codec, x: torch.Tensor, device: str, out_dir: Path) -> dict:
    """Code on ``device`` (stock and adapted encoder), decode on the CPU and on ``device``;
    compare with a CPU encode. (The first run here, before the coder turned TF32 off, measured
    TF32's effect: docs/cuda.md.)"""
    q = 42
    cpu = load_codec(device="cpu")
    t, _, h, w = x.shape
    res = {}
    with torch.enable_grad():
        adapted, _ = update_gop(codec.intra, codec.inter, x, q, AdaptConfig(steps=1))
    for name, inter in (("stock", None), ("adapted", adapted)):
        payload, recon = codec.encode_gop_with_recon(x, q, inter=inter)
        dev_dec = codec.decode_gop(payload, t, h, w, q)
        cpu_dec = cpu.decode_gop(payload, t, h, w, q)
        res[name] = {
            "bytes": len(payload),
            "max_abs_encoder_vs_cpu_decode": float((recon - cpu_dec).abs().max()),
            "max_abs_encoder_vs_device_decode": float((recon - dev_dec).abs().max()),
            "rd_cost": rd_cost(x, cpu_dec, payload, q),
            "sha256_cpu_decode": hashlib.sha256(cpu_dec.numpy().tobytes()).hexdigest(),
        }
        (out_dir / f"ct_q42_{name}_cuda.bin").write_bytes(payload)
        if name == "stock":
            p_cpu = cpu.encode_gop(x.cpu(), q)
            res["cpu_encode_identical_to_device_stream"] = p_cpu == payload
    return res


def compress_volumes(val: Path, out_dir: Path, device: str, names: list[str]) -> dict:
    """The product path on ``device``: adaptive compress of whole val volumes."""
    from medgpu import api

    res = {}
    for name in names:
        dst = out_dir / (name.split(".")[0] + "_q42_adapt.mgpu")
        t = time.time()
        rep = api.compress(val / name, dst, quality=42, device=device, adapt=True, overwrite=True)
        res[name] = {"seconds": time.time() - t, "bits_per_voxel": rep["bits_per_voxel"], "psnr": rep["psnr"],
                     "bytes": rep["bytes"], "encode_seconds": rep["encode_seconds"],
                     "decode_seconds": rep["decode_seconds"]}
    return res


BUDGET_VARIANTS = "adapters:;full:scope=full"
"""``name:key=value,...`` items separated by ``;`` (AdaptConfig fields), for ``--budget-variants``."""


def parse_variants(spec: str) -> dict[str, dict]:
    """``"a32:c_dw=32,lr=0.0003;full:scope=full"`` -> {"a32": {"c_dw": 32, "lr": 0.0003}, ...}."""
    out = {}
    for item in filter(None, spec.split(";")):
        name, _, body = item.partition(":")
        kw = {}
        for pair in filter(None, body.split(",")):
            key, _, value = pair.partition("=")
            kw[key] = value if key in ("scope", "rate") else (float(value) if key == "lr" else int(value))
        out[name] = kw
    return out


def budget(codec, val: Path, rec: Recorder, epochs: list[int], size: int, variants: dict[str, dict]) -> dict:
    """Real RD-cost change (%) after each of ``epochs`` update epochs, one run per variant."""
    q, res = 42, {}
    gops = {name: first_gop(val / name, size, 30)[0] for name in BUDGET_VOLUMES}
    for variant, kw in variants.items():  # variant by variant: a deadline cuts whole variants
        for name, x in gops.items():
            if rec.left() < 20:
                return res
            curve, on_epoch = rd_change_by_epoch(codec, x, q, epochs)
            t = time.time()
            with torch.enable_grad():
                update_gop(codec.intra, codec.inter, x, q, AdaptConfig(steps=max(epochs), **kw), on_epoch=on_epoch)
            key = f"{name}/{variant}"
            res[key] = {"settings": kw, "rd_cost_change_percent_by_epoch": curve, "seconds": round(time.time() - t, 1)}
            rec.write("budget_partial", {key: res[key]})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline", type=float, default=330, help="seconds; parts not started by then are skipped")
    ap.add_argument("--compress", default="mr_breast_radiomics_breast1.nii.gz," + CT)
    ap.add_argument("--epochs", default="1,2,4,8,16,24")
    ap.add_argument("--budget-variants", default=BUDGET_VARIANTS)
    ap.add_argument("--parts", default="env,exactness,timings,determinism,compress,budget")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    val, out = Path(args.val), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = Recorder(out, args.deadline)
    size = 64 if args.quick else 256
    rec.run("env", env, args.device)
    if args.device.startswith("cuda") and "exactness" in parts:
        rec.run("exactness", exactness, args.device)
    codec = load_codec(device=args.device)
    x = first_gop(val / CT, size, 6 if args.quick else 30)[0]
    if "timings" in parts:
        rec.run("timings", timings, codec, x, args.device, args.quick)
    if "determinism" in parts:
        rec.run("determinism", determinism, codec, x, args.device, out)
    if "compress" in parts:
        names = ["mr_breast_radiomics_breast1.nii.gz"] if args.quick else args.compress.split(",")
        rec.run("compress", compress_volumes, val, out, args.device, names)
    if "budget" in parts:
        epochs = [1, 2] if args.quick else [int(e) for e in args.epochs.split(",")]
        rec.run("budget", budget, codec, val, rec, epochs, 32 if args.quick else 128,
                parse_variants(args.budget_variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

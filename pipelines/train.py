"""Pre-train the medgpu codec on ../shared/data/train (CPU or CUDA, resumable).

Stages, in the order that converges (docs/design.md §7):
  intra   I-frame codec on random crops at all anchor rates
  motion  motion estimation alone (warping loss between neighbouring slices)
  inter   P-frame codec with the I-frame codec frozen, on clips coded through their
          own reconstructions (cascaded loss over 2 then more P-frames)

Each stage starts from the newest checkpoint in --run-dir, else from the shipped
weights, else from scratch; it saves a checkpoint every --save-every steps and at the
end, and `--export` writes the fp16 weights that ship in medgpu/weights/.

    python pipelines/train.py --stage intra --minutes 30
    python pipelines/train.py --stage inter --minutes 40 --frames 3 --export
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_data import SequenceSampler, load_videos, load_volumes  # noqa: E402

from medgpu.codec.layers import warp  # noqa: E402
from medgpu.codec.quality import ANCHOR_QUALITIES, LAMBDAS  # noqa: E402
from medgpu.codec.registry import build_networks, export_state, load_state, weights_path  # noqa: E402


def bits(likelihoods: dict) -> dict:
    """Bits per sample of each latent: {name: [B]}."""
    return {k: (-torch.log2(l)).flatten(1).sum(1) for k, l in likelihoods.items()}


def rd_loss(x, x_hat, likelihoods, lam, weights: dict | None = None):
    """Per-sample lambda * MSE + bits per pixel, averaged over the batch.

    ``weights`` scales the rate of named latents in the loss (a warm-up); the reported bpp is unweighted."""
    pixels = x.shape[-1] * x.shape[-2]
    mse = ((x - x_hat) ** 2).flatten(1).mean(1)
    per_latent = bits(likelihoods)
    bpp = sum(per_latent.values()) / pixels
    weights = weights or {}
    loss_bpp = sum(weights.get(k, 1.0) * b for k, b in per_latent.items()) / pixels
    return (lam * mse + loss_bpp).mean(), mse.mean().item(), bpp.mean().item()


def rate_warmup_weight(step: int, warmup: int) -> float:
    """Weight of the contextual latent's rate: 0 for the first half of ``warmup`` steps, then a linear
    ramp to 1 at ``warmup`` (1 throughout when ``warmup`` is 0)."""
    if warmup <= 0:
        return 1.0
    return float(min(1.0, max(0.0, (step - warmup / 2) / (warmup / 2))))


def smoothness(flow: torch.Tensor) -> torch.Tensor:
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()


def load_start(intra, inter, run_dir: str, device) -> dict:
    """Resume from the run checkpoint, else the shipped weights; returns the saved meta."""
    ckpt = os.path.join(run_dir, "codec.ckpt")
    if os.path.exists(ckpt):
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        load_state(intra, inter, saved["state"])
        print(f"resumed from {ckpt}")
        return saved.get("meta", {})
    shipped = weights_path()
    if shipped.is_file():
        with shipped.open("rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
        skipped = load_matching(intra, inter, state)  # the networks may have changed since those weights
        print("started from the shipped weights" + (f" where they fit the networks ({len(skipped)} tensors left "
                                                    "fresh)" if skipped else ""))
        meta_path = os.path.join(os.path.dirname(str(shipped)), "MODEL_CARD.json")
        if os.path.exists(meta_path):
            return json.load(open(meta_path)).get("training", {})
    return {}


def load_matching(intra, inter, state: dict) -> list[str]:
    """Load the tensors of a combined state dict whose names and shapes fit the networks;
    returns the names of the networks' tensors left as they were."""
    skipped = []
    for prefix, net in (("intra.", intra), ("inter.", inter)):
        own = net.state_dict()
        fits = {k: state[prefix + k].to(v.dtype) for k, v in own.items()
                if prefix + k in state and state[prefix + k].shape == v.shape}
        net.load_state_dict(fits, strict=False)
        skipped += [prefix + k for k in own if k not in fits]
    return skipped


def save(intra, inter, run_dir: str, meta: dict) -> None:
    os.makedirs(run_dir, exist_ok=True)
    state = {}
    for prefix, net in (("intra.", intra), ("inter.", inter)):
        state.update({prefix + k: v for k, v in net.state_dict().items()})
    tmp = os.path.join(run_dir, "codec.ckpt.tmp")
    torch.save({"state": state, "meta": meta}, tmp)
    os.replace(tmp, os.path.join(run_dir, "codec.ckpt"))


def export(intra, inter, meta: dict) -> None:
    path = str(weights_path())
    tmp = path + ".tmp"
    torch.save(export_state(intra, inter), tmp)
    os.replace(tmp, path)
    card = os.path.join(os.path.dirname(path), "MODEL_CARD.json")
    info = json.load(open(card)) if os.path.exists(card) else {}
    info["training"] = meta
    with open(card, "w") as f:
        json.dump(info, f, indent=2)
    print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def _progress(meta: dict, stage: str, start: dict, step: int, t0: float, device, frames: int) -> dict:
    """Meta with this run's steps and seconds added to the stage's totals so far."""
    out = json.loads(json.dumps(meta))
    out[stage] = {"steps": start["steps"] + step, "seconds": round(start["seconds"] + time.time() - t0, 1),
                  "device": str(device), "threads": torch.get_num_threads(), "clip_frames": frames}
    return out


MOTION_PATH = ("motion_estimation.", "motion_encoder.", "motion_latent.", "motion_decoder.", "mv_enc_scale", "mv_dec_scale")
"""State-dict prefixes of a P-frame codec's motion path (estimation and motion coding)."""

CONTEXTUAL_PATH = ("context.", "contextual_encoder.", "contextual_latent.", "contextual_decoder.", "feature_adaptor.",
                   "enc_scale", "dec_scale")
"""State-dict prefixes of a P-frame codec's contextual branch: temporal context mining, the contextual
encoder, latent codec and decoder, the I-frame feature adaptor and the quantisation scales (everything
but the motion path)."""


INTRA_TO_CONTEXTUAL = {
    "encoder.0.": "contextual_encoder.s1.", "encoder.1.": "contextual_encoder.s2.",
    "encoder.2.": "contextual_encoder.s3.", "encoder.3.": "contextual_encoder.d4.",
    "decoder.0.": "contextual_decoder.head.", "decoder.1.": "contextual_decoder.u1.",
    "decoder.2.": "contextual_decoder.u2.", "decoder.3.": "contextual_decoder.u3.",
    "decoder.4.": "contextual_decoder.u4.", "decoder.5.": "contextual_decoder.res.",
    "decoder.6.": "contextual_decoder.out.", "latent.": "contextual_latent.",
    "enc_scale": "enc_scale", "dec_scale": "dec_scale",
}
"""Where each I-frame codec parameter goes in the P-frame codec's contextual branch (same layers)."""

HEAD_INPUTS = {"anchor_head": ((0, 0),), "nonanchor_head": ((0, 0), (1, 2))}
"""Input blocks of the latent codec's parameter heads, as (block in the I-frame head, block in the
P-frame head), in units of ``hidden`` channels: the P-frame heads read [hyper, prior] (anchor) and
[hyper, prior, checkerboard context] (non-anchor), the I-frame heads [hyper] and [hyper, context]."""


NEW_IN_CONTEXTUAL = ("context.", "feature_adaptor.", "contextual_latent.prior_net.")
"""State-dict prefixes of the contextual branch's parts that have no I-frame counterpart (with the
context projections ``*.ctx*``): they start fresh or at zero in :func:`init_contextual_from_intra`."""


def is_new_in_contextual(name: str) -> bool:
    """Whether parameter ``name`` of a P-frame codec is one of the parts with no I-frame counterpart."""
    return name.startswith(NEW_IN_CONTEXTUAL) or (name.startswith("contextual_") and ".ctx" in name)


def init_contextual_from_intra(inter, intra) -> None:
    """Start the P codec's contextual branch as the trained I-frame codec.

    The contextual encoder, decoder, latent codec and quantisation scales take the I-frame
    codec's weights; what the I-frame codec has no counterpart for (the context projections, the
    temporal prior's inputs to the entropy heads) starts at zero, so the branch codes a frame
    exactly as the I-frame codec does and training only has to learn what the reference adds.
    Context mining and the feature adaptor are re-initialised; the motion path is kept.
    (An earlier P codec trained from scratch collapsed: its latent carried nothing, docs/codec.md.)
    """
    fresh = build_networks()[1].state_dict()
    state = {k: v for k, v in fresh.items() if k.startswith(CONTEXTUAL_PATH)}
    hidden = inter.contextual_latent.prior_net.layers[0].weight.shape[0]
    for key, value in intra.state_dict().items():
        prefix = next((p for p in INTRA_TO_CONTEXTUAL if key.startswith(p)), None)
        if prefix is None:
            continue
        target = INTRA_TO_CONTEXTUAL[prefix] + key[len(prefix):]
        head = next((h for h in HEAD_INPUTS if f".{h}.net.layers.0.weight" in target), None)
        if head is not None:  # the first layer of a head reads more input blocks in the P codec
            spliced = torch.zeros_like(state[target])
            for src, dst in HEAD_INPUTS[head]:
                spliced[:, dst * hidden:(dst + 1) * hidden] = value[:, src * hidden:(src + 1) * hidden]
            value = spliced
        state[target] = value.clone()
    inter.load_state_dict(state, strict=False)
    print("contextual branch initialised from the I-frame codec")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["intra", "motion", "inter"], required=True)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "train"))
    ap.add_argument("--run-dir", default="runs/train")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--steps", type=int, default=10**9)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=2, help="clip length for motion/inter (1 I-frame + P-frames)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-step", type=int, default=2,
                    help="clips take every k-th slice, k drawn from 1..max-step (larger: thicker slices, as in "
                         "clinical CT and EPI)")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--export", action="store_true", help="write the shipped fp16 weights at the end")
    ap.add_argument("--anchors", default="0,1,2,3", help="anchor rates to sample (indices into LAMBDAS)")
    ap.add_argument("--init-contextual-from-intra", action="store_true",
                    help="start the P codec's contextual branch (encoder, decoder, latent codec, scales) as the "
                         "trained I-frame codec, with the temporal contexts and prior switched off, before "
                         "training (docs/codec.md)")
    ap.add_argument("--new-lr", type=float, default=0.0,
                    help="inter stage: learning rate of the contextual branch's parts that the I-frame codec has "
                         "no counterpart for (temporal context mining, context projections, feature adaptor, "
                         "temporal prior); 0: --lr")
    ap.add_argument("--rounded-rate", action="store_true",
                    help="inter stage: rate from the likelihoods of the rounded symbols (straight-through), as the "
                         "coder codes them, instead of uniform noise; noise over-prices latents that should be all "
                         "zero (a zero symbol then costs ~0.15 bit at the scale noise makes optimal, ~0 when coded)")
    ap.add_argument("--freeze-motion", action="store_true",
                    help="inter stage: keep the motion path (estimation and motion coding) fixed")
    ap.add_argument("--rate-warmup", type=int, default=0,
                    help="inter stage: train the contextual latent without its rate for the first half of this "
                         "many steps of this run, then ramp its rate weight linearly to 1")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(int(time.time()))
    device = torch.device(args.device)

    intra, inter = build_networks()
    meta = load_start(intra, inter, args.run_dir, device)
    if args.init_contextual_from_intra:
        init_contextual_from_intra(inter, intra)
        meta = {**meta, "inter": {"steps": 0, "seconds": 0.0}, "inter_before_init_from_intra": meta.get("inter")}
    intra.to(device), inter.to(device)
    sampler = SequenceSampler(load_volumes(args.data), load_videos(args.data), seed=int(time.time()),
                              max_step=args.max_step)

    if args.stage == "intra":
        params = list(intra.parameters())
    elif args.stage == "motion":
        params = list(inter.motion_estimation.parameters())
    else:
        frozen = MOTION_PATH if args.freeze_motion else ()
        for n, p in inter.named_parameters():
            p.requires_grad_(not n.startswith(frozen))
        params = [p for p in inter.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": args.lr}]
    if args.new_lr and args.stage == "inter":
        new = [p for n, p in inter.named_parameters() if p.requires_grad and is_new_in_contextual(n)]
        ids = {id(p) for p in new}
        groups = [{"params": [p for p in params if id(p) not in ids], "lr": args.lr}, {"params": new, "lr": args.new_lr}]
    opt = torch.optim.Adam(groups)
    for g in opt.param_groups:
        g["start_lr"] = g["lr"]
    chosen = [int(a) for a in args.anchors.split(",")]
    lam_table = torch.tensor([LAMBDAS[a] for a in chosen], device=device)
    anchors = torch.tensor([ANCHOR_QUALITIES[a] for a in chosen], device=device)
    stage_meta = dict(meta.get(args.stage, {"steps": 0, "seconds": 0.0}))
    t0, step, log = time.time(), 0, []
    frames = 1 if args.stage == "intra" else max(2, args.frames)
    while step < args.steps and time.time() - t0 < args.minutes * 60:
        x = torch.from_numpy(sampler.batch(args.batch, frames, args.size)).to(device)
        a = torch.randint(0, len(anchors), (args.batch,), device=device)
        q, lam = anchors[a], lam_table[a]
        if args.stage == "intra":
            out = intra(x[:, 0], q)
            loss, mse, bpp = rd_loss(x[:, 0], out["x_hat"], out["likelihoods"], lam)
        elif args.stage == "motion":
            loss = 0.0
            for t in range(1, frames):
                flow = inter.motion_estimation(x[:, t], x[:, t - 1])
                loss = loss + F.mse_loss(warp(x[:, t - 1], flow), x[:, t]) + 0.01 * smoothness(flow)
            mse, bpp = float(loss), 0.0
        else:
            with torch.no_grad():
                out = intra(x[:, 0], q)
            ref = inter.reference_from_intra(out["x_hat"].detach(), out["y_hat"].detach())
            loss, mse, bpp = 0.0, 0.0, 0.0
            w = rate_warmup_weight(step, args.rate_warmup)
            for t in range(1, frames):
                x_hat, ref, lik = inter(x[:, t], ref, q, noise=not args.rounded_rate)
                l, m, b = rd_loss(x[:, t], x_hat, lik, lam, {"y": w, "z": w})
                loss, mse, bpp = loss + l, mse + m / (frames - 1), bpp + b / (frames - 1)
        if time.time() - t0 > 0.85 * args.minutes * 60:  # final low-lr phase
            for g in opt.param_groups:
                g["lr"] = g["start_lr"] * 0.2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        log.append((float(loss.detach()), mse, bpp))
        if step % 25 == 0:
            l, m, b = np.mean(log, 0)
            psnr = 10 * np.log10(1 / max(m, 1e-12)) if args.stage != "motion" else float("nan")
            print(f"{args.stage} step {stage_meta['steps'] + step} loss {l:.4f} mse-psnr {psnr:.2f} bpp {b:.4f} "
                  f"{(time.time() - t0) / step:.2f}s/step", flush=True)
            log = []
        if step % args.save_every == 0:
            save(intra, inter, args.run_dir, _progress(meta, args.stage, stage_meta, step, t0, device, frames))
    meta = _progress(meta, args.stage, stage_meta, step, t0, device, frames)
    save(intra, inter, args.run_dir, meta)
    if args.export:
        export(intra, inter, meta)


if __name__ == "__main__":
    main()

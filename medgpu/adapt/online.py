"""Group-aware, patch-based online updating (paper Algorithm 1, eq. (4)).

For one GoP: cut the padded frames into patch-GoPs (all frames, one spatial window each);
for ``steps`` epochs, for each patch-GoP, run the whole P-frame chain from the decoded
I-frame, each frame coded from the reconstruction of the one before, and minimise
``sum_t lambda * MSE + bits per pixel`` over the trainable (adapter) parameters. The
I-frame is never updated. The updated copy then codes the full GoP
(:func:`encode_adapted_gop`, which also codes it with the stock encoder and keeps the stream
with the lower real rate-distortion cost).
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Callable

import torch

from medgpu.adapt.adapters import adapt_encoder, adapter_parameters
from medgpu.adapt.config import AdaptConfig
from medgpu.codec.entropy import SymbolCoder
from medgpu.codec.gop import IntraTrials, pad_frames, padded_size
from medgpu.codec.inter import InterCodec, Reference
from medgpu.codec.intra import IntraCodec
from medgpu.codec.quality import lagrangian_cost, lam

if TYPE_CHECKING:  # pragma: no cover
    from medgpu.codec.registry import VolumeCodec


def patch_windows(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets (multiples of ``stride``) of windows of ``patch`` covering ``size``."""
    patch = min(size, -(-patch // stride) * stride)
    starts = list(range(0, size - patch + 1, patch))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def patch_gop_windows(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the patch-GoPs covering a padded ``height`` x ``width`` frame."""
    return [(r, c) for r in patch_windows(height, patch, stride) for c in patch_windows(width, patch, stride)]


def frames_updated(num_frames: int, config: AdaptConfig) -> int:
    """How many of a GoP's frames the update runs on (``--adapt-frames``, at least 2)."""
    return num_frames if config.frames is None else min(num_frames, max(2, config.frames))


def planned_steps(intra: IntraCodec, inter: InterCodec, shape: tuple[int, ...], config: AdaptConfig) -> int:
    """How many update steps (epochs x patch-GoPs) :func:`update_gop` takes on frames of
    ``shape`` (T, ..., H, W); 0 when it updates nothing (a lone I-frame, no steps)."""
    if frames_updated(shape[0], config) < 2 or config.steps <= 0:
        return 0
    stride = max(intra.stride, inter.stride)
    return config.steps * len(patch_gop_windows(*padded_size(*shape[-2:], stride), config.patch, stride))


def _chain_loss(model: InterCodec, x: torch.Tensor, ref: Reference, q: int, noise: bool = False,
                valid: tuple[int, int] | None = None) -> torch.Tensor:
    """Summed RD loss of the P-frames of ``x`` [T,1,h,w] coded from ``ref``; ``noise`` selects
    the noisy rate estimate instead of the rounded one (``AdaptConfig.rate``). ``valid`` (rows,
    columns) is the part of the patch inside the frame, the rest being the stride padding: as
    in the real cost, the distortion is taken there and the bits are per valid pixel."""
    qt = torch.tensor([q], device=x.device)
    lmb = lam(q)
    vh, vw = valid or x.shape[-2:]
    loss = x.new_zeros(())
    for t in range(1, x.shape[0]):
        x_hat, ref, lik = model(x[t : t + 1], ref, qt, noise)
        bits = sum((-torch.log2(v)).sum() for v in lik.values())
        mse = torch.mean((x_hat[..., :vh, :vw] - x[t : t + 1, :, :vh, :vw]) ** 2)
        loss = loss + lmb * mse + bits / (vh * vw)
    return loss


def decoded_i_frame(intra: IntraCodec, frame: torch.Tensor, quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's reconstruction and latent of ``frame`` [1,1,H,W] (padded) coded as an I-frame:
    the start of every P-frame chain of an update."""
    g = intra.latent.gaussian
    with torch.no_grad():
        return intra.compress(frame, quality, SymbolCoder(g.models(), g.half_width.cpu().numpy()))


def update_step(model: InterCodec, opt: torch.optim.Optimizer, x: torch.Tensor, ref: Reference, q: int,
                noise: bool = False, valid: tuple[int, int] | None = None) -> float:
    """One step of ``opt`` on the chain loss of ``x`` from ``ref`` (:func:`_chain_loss`); returns the
    loss before the step."""
    loss = _chain_loss(model, x, ref, q, noise, valid)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def update_gop(intra: IntraCodec, inter: InterCodec, frames: torch.Tensor, quality: int,
               config: AdaptConfig, adapted: InterCodec | None = None,
               on_epoch: Callable[[int, InterCodec], None] | None = None,
               on_step: Callable[[], None] | None = None) -> tuple[InterCodec, dict]:
    """Optimise encoder-side adapters on one GoP; returns (adapted copy, report).

    ``inter`` is the stock P-frame codec; ``adapted`` an earlier copy to carry over;
    ``on_epoch(epoch, model)`` is called after each epoch (1-based), e.g. to code the GoP
    along the way in a benchmark; ``on_step()`` after each update step (a progress bar;
    :func:`planned_steps` says how many there will be).
    """
    t0 = time.time()
    device = next(inter.parameters()).device
    stride = max(intra.stride, inter.stride)
    h0, w0 = frames.shape[-2:]
    x = pad_frames(frames.float().to(device), stride)[: frames_updated(frames.shape[0], config)]
    model = adapted if adapted is not None else adapt_encoder(inter, config.c_dw, config.kernel, config.scope)
    params = adapter_parameters(model)
    report = {"settings": config.to_dict(), "trainable_parameters": sum(p.numel() for p in params)}
    if x.shape[0] < 2 or config.steps <= 0 or not params:
        report.update(seconds=time.time() - t0, epochs=0)
        return model, report
    x0_hat, y0_hat = decoded_i_frame(intra, x[0:1], quality)
    h, w = x.shape[-2:]
    windows = patch_gop_windows(h, w, config.patch, stride)
    ps_h = min(h, -(-config.patch // stride) * stride)
    ps_w = min(w, -(-config.patch // stride) * stride)

    def patch_ref(r: int, c: int) -> Reference:
        f = x0_hat[..., r : r + ps_h, c : c + ps_w]
        y = y0_hat[..., r // 16 : (r + ps_h) // 16, c // 16 : (c + ps_w) // 16]
        return model.reference_from_intra(f, y)

    opt = torch.optim.Adam(params, lr=config.learning_rate)
    epoch_seconds, epoch_losses = [], []
    for _ in range(config.steps):
        te, total = time.time(), 0.0
        for r, c in windows:
            total += update_step(model, opt, x[..., r : r + ps_h, c : c + ps_w], patch_ref(r, c), quality,
                                 config.rate == "noisy", (min(ps_h, h0 - r), min(ps_w, w0 - c)))
            if on_step is not None:
                on_step()
        epoch_seconds.append(time.time() - te)
        epoch_losses.append(total / len(windows) / (x.shape[0] - 1))
        if on_epoch is not None:
            on_epoch(len(epoch_losses), model)
    report.update(seconds=time.time() - t0, epochs=config.steps, seconds_per_epoch=sum(epoch_seconds) / len(epoch_seconds),
                  patches=len(windows), training_loss_per_epoch=epoch_losses)
    return model, report


def rd_cost(frames: torch.Tensor, recon: torch.Tensor, payload: bytes, quality: int) -> float:
    """Real rate-distortion cost of a coded GoP: lambda(q) * MSE + bits per pixel, from the
    payload's bytes and the decoder's reconstruction (both [T,1,H,W] in [0,1])."""
    mse = float(((recon.float().cpu() - frames.float().cpu()) ** 2).mean())
    return lagrangian_cost(quality, mse, len(payload), frames[:, 0].numel())


def encode_adapted_gop(codec: "VolumeCodec", frames: torch.Tensor, quality: int, config: AdaptConfig,
                       adapted: InterCodec | None = None, mode: str = "auto",
                       on_step: Callable[[], None] | None = None) -> tuple[bytes, InterCodec, dict]:
    """Update adapters on ``frames`` (see :func:`update_gop`), code the GoP with the stock and
    the adapted encoder, and keep the stream with the lower real RD cost.

    Both streams decode with the stock decoder, so choosing costs nothing in the stream; the
    product therefore never codes a GoP worse (at its lambda) than without adaptation.
    Returns (payload, adapters to carry over to the next GoP (the updated copy if it won,
    else ``adapted`` unchanged), report with ``rd_cost_before`` (stock), ``rd_cost_after``
    (adapted) and ``used``). ``on_step`` as in :func:`update_gop`.
    """
    t0 = time.time()
    start = copy.deepcopy(adapted) if adapted is not None else None  # ``adapted`` stays as it was
    with torch.enable_grad():
        model, report = update_gop(codec.intra, codec.inter, frames, quality, config, start, on_step=on_step)
    report["update_seconds"] = report["seconds"]
    trials = IntraTrials(quality)  # the adapted encode reuses the stock encode's I-frame trials
    stock, stock_recon = codec.encode_gop_with_recon(frames, quality, mode=mode, intra_trials=trials)
    if frames.shape[0] < 2 or (report["epochs"] == 0 and adapted is None):
        # nothing to adapt (a lone I-frame) or zero-initialised adapters: the same stream twice
        cost = rd_cost(frames, stock_recon, stock, quality)
        report.update(rd_cost_before=cost, rd_cost_after=cost, used="stock", seconds=time.time() - t0)
        return stock, model, report
    ada, ada_recon = codec.encode_gop_with_recon(frames, quality, inter=model, mode=mode, intra_trials=trials)
    before, after = rd_cost(frames, stock_recon, stock, quality), rd_cost(frames, ada_recon, ada, quality)
    keep = after < before  # a tie (e.g. no frame coded as a P-frame) keeps the stock stream
    report.update(rd_cost_before=before, rd_cost_after=after, used="adapted" if keep else "stock",
                  seconds=time.time() - t0)
    # adapters that lost to the stock encoder are not carried on: the next GoP starts from
    # the last adapters that won (or from zero)
    return (ada if keep else stock), (model if keep else adapted), report

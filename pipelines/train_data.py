"""Training samples for the codec: slices of the training volumes along all three axes
plus grey-level natural video, random crops and intensity augmentation."""
from __future__ import annotations

import glob
import os

import numpy as np


def load_volumes(root: str) -> list[np.ndarray]:
    """Every training volume (4D split into 3D), scaled to [0,1] by its min..max."""
    import nibabel as nib

    out = []
    for path in sorted(glob.glob(os.path.join(root, "*.nii*"))):
        data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        vols = [data] if data.ndim == 3 else [data[..., i] for i in range(data.shape[3])]
        for v in vols:
            lo, hi = float(v.min()), float(v.max())
            out.append(((v - lo) / max(hi - lo, 1e-6)).astype(np.float32))
    return out


def load_videos(root: str, max_frames: int = 120) -> list[np.ndarray]:
    """Grey-level frames [T,H,W] in [0,1] of each natural video (first ``max_frames``)."""
    import av

    out = []
    for path in sorted(glob.glob(os.path.join(root, "video", "*"))):
        try:
            with av.open(path) as c:
                frames = []
                for frame in c.decode(video=0):
                    frames.append(frame.to_ndarray(format="gray"))
                    if len(frames) >= max_frames:
                        break
        except Exception:  # noqa: BLE001 - a broken sample video is skipped
            continue
        if len(frames) >= 8:
            out.append(np.stack(frames).astype(np.float32) / 255.0)
    return out


class SequenceSampler:
    """Draws [B,T,1,S,S] float32 clips: T consecutive slices (or video frames)."""

    def __init__(self, volumes: list[np.ndarray], videos: list[np.ndarray], seed: int = 0, video_share: float = 0.3,
                 max_step: int = 2) -> None:
        self.rng = np.random.default_rng(seed)
        self.max_step = max_step  # clips take every 1st..max_step-th slice (thicker slices than the source)
        self.volumes = volumes
        self.videos = videos
        self.video_share = video_share if videos else 0.0

    def _stack(self, frames: int) -> np.ndarray:
        """A [N,H,W] stack from a random source, read along a random axis."""
        if self.rng.random() < self.video_share:
            return self.videos[self.rng.integers(len(self.videos))]
        v = self.volumes[self.rng.integers(len(self.volumes))]
        axis = int(self.rng.integers(3))
        return np.moveaxis(v, axis, 0)

    def _augment(self, clip: np.ndarray) -> np.ndarray:
        if self.rng.random() < 0.5:
            clip = clip[..., ::-1]
        if self.rng.random() < 0.5:
            clip = clip[..., ::-1, :]
        if self.rng.random() < 0.5:  # random intensity window
            lo = self.rng.uniform(0.0, 0.2)
            hi = self.rng.uniform(0.5, 1.0)
            clip = np.clip((clip - lo) / (hi - lo), 0, 1)
        gamma = float(np.exp(self.rng.uniform(-0.4, 0.4)))
        return np.power(np.clip(clip, 0, 1), gamma)

    def clip(self, frames: int, size: int) -> np.ndarray:
        """One [T,1,S,S] clip with reflect padding where a slice is smaller than S."""
        for _ in range(20):
            stack = self._stack(frames)
            n, h, w = stack.shape
            if n < frames:
                continue
            longest = min(self.max_step, (n - 1) // max(1, frames - 1))  # the clip must fit in the stack
            step = int(self.rng.integers(1, max(1, longest) + 1))
            start = int(self.rng.integers(0, n - step * (frames - 1)))
            idx = start + step * np.arange(frames)
            if self.rng.random() < 0.5:
                idx = idx[::-1]
            y0 = int(self.rng.integers(0, max(1, h - size + 1)))
            x0 = int(self.rng.integers(0, max(1, w - size + 1)))
            c = stack[idx, y0 : y0 + size, x0 : x0 + size]
            if float(c.std()) < 0.01 and self.rng.random() < 0.8:
                continue  # mostly skip empty background
            ph, pw = size - c.shape[1], size - c.shape[2]
            if ph or pw:
                c = np.pad(c, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(c.shape[1:]) > max(ph, pw) else "edge")
            return self._augment(c)[:, None].astype(np.float32)
        return np.pad(c, ((0, 0), (0, size - c.shape[1]), (0, size - c.shape[2])), mode="edge")[:, None].astype(np.float32)

    def batch(self, batch: int, frames: int, size: int) -> np.ndarray:
        return np.stack([self.clip(frames, size) for _ in range(batch)])

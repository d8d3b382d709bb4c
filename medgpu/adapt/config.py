"""Settings of content-adaptive encoding (no torch import: cheap for the CLI and API)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class AdaptConfig:
    """Settings of the online update (the sidecar records them)."""

    steps: int = 2  # epochs over all patch-GoPs (2: a 30x256x256 GoP adapts in < 60 s on a 2-core CPU)
    patch: int = 128  # patch size in pixels (rounded up to the network stride)
    frames: int | None = None  # update on the first N frames only (None: the whole GoP)
    scope: str = "adapters"  # "adapters" (the method) or "full" (every encoder-side parameter)
    lr: float = 1e-2  # Adam; on a 30x256x256 CT GoP at quality 42 (docs/adaptation.md) 1e-2 cut the real RD cost most
    c_dw: int = 8
    kernel: int = 3
    carry_over: bool = True  # start each GoP from the previous GoP's adapters

    def validate(self) -> "AdaptConfig":
        """Raise ``ValueError`` naming the first out-of-range setting."""
        if self.steps < 0:
            raise ValueError(f"--adapt-steps must be >= 0, got {self.steps}")
        if self.patch < 16:
            raise ValueError(f"--adapt-patch must be >= 16 pixels, got {self.patch}")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"--adapt-frames must be >= 1, got {self.frames}")
        if self.scope not in ("adapters", "full"):
            raise ValueError(f"--adapt-scope must be 'adapters' or 'full', got {self.scope!r}")
        if not self.lr > 0:
            raise ValueError(f"adaptation learning rate must be > 0, got {self.lr}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

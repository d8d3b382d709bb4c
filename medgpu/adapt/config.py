"""Settings of content-adaptive encoding (no torch import: cheap for the CLI and API)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from medgpu.errors import OptionError


LEARNING_RATES = {"adapters": 1e-3, "full": 1e-4}
"""Default Adam step per scope, probed with the shipped weights on the first GoP of the val CT
and breast MR (128-pixel crop, quality 42, forced P-frames, 2 epochs; docs/adaptation.md has the
table). The codec sits at a trained optimum, so only small steps help: adapters gained most at
1e-3 and lost at 3e-3 (CT +2.6 %) and 1e-2 (+7 to +19 %); the full update did best at 1e-4."""


RATE_ESTIMATES = ("rounded", "noisy")
"""How the update's loss estimates the rate: from the likelihoods of the rounded symbols, as the
coder will code them (straight-through gradient), or with pre-training's uniform-noise stand-in."""


@dataclass
class AdaptConfig:
    """Settings of the online update (the sidecar records them)."""

    steps: int = 2  # epochs over all patch-GoPs (a 30x256x256 GoP on the 2-core CPU: update 54-61 s, adaptive
    # encode 76-88 s; 1 epoch fits 60 s but loses to the stock stream at 18 of 21 val points, docs/adaptation.md)
    patch: int = 128  # patch size in pixels (rounded up to the network stride)
    frames: int | None = None  # update on the first N frames only (None: the whole GoP)
    scope: str = "adapters"  # "adapters" (the method) or "full" (every encoder-side parameter)
    lr: float | None = None  # Adam; None: LEARNING_RATES[scope] (see there)
    c_dw: int = 8
    kernel: int = 3
    carry_over: bool = False  # True: start each GoP from the previous GoP's winning adapters
    # (reset was measured slightly better with the shipped weights, docs/adaptation.md, and keeps
    # every GoP's encode independent of the others)
    rate: str = "rounded"  # rate term: "rounded" (the symbols as coded, straight-through) or "noisy" (pre-training's)

    def validate(self) -> "AdaptConfig":
        """Raise :class:`~medgpu.errors.OptionError` (a ``ValueError``) naming the first
        out-of-range setting."""
        if self.steps < 0:
            raise OptionError(f"--adapt-steps must be >= 0, got {self.steps}")
        if self.patch < 16:
            raise OptionError(f"--adapt-patch must be >= 16 pixels, got {self.patch}")
        if self.frames is not None and self.frames < 1:
            raise OptionError(f"--adapt-frames must be >= 1, got {self.frames}")
        self._check_scope()
        if self.rate not in RATE_ESTIMATES:
            raise OptionError(f"adaptation rate estimate must be one of {', '.join(RATE_ESTIMATES)}, got {self.rate!r}")
        if self.lr is not None and not self.lr > 0:
            raise OptionError(f"adaptation learning rate must be > 0, got {self.lr}")
        return self

    @property
    def learning_rate(self) -> float:
        """The Adam step size in use: ``lr``, or the default of the scope."""
        if self.lr is not None:
            return self.lr
        self._check_scope()
        return LEARNING_RATES[self.scope]

    def _check_scope(self) -> None:
        if self.scope not in LEARNING_RATES:
            raise OptionError(f"--adapt-scope must be 'adapters' or 'full', got {self.scope!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "lr": self.learning_rate}

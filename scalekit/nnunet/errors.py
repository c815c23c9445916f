"""Errors raised while training a stage."""

from __future__ import annotations

from scalekit.errors import ScalekitError


class NonFiniteLossError(ScalekitError, FloatingPointError):
    """The training loss became NaN or infinite; training stops at the first such batch."""

    def __init__(self, epoch: int, loss: float) -> None:
        self.epoch = epoch
        self.loss = loss
        super().__init__(
            f"training loss became {loss} in epoch {epoch}; the run diverged. Lower the learning rate "
            "(initial_lr), use amp='bf16' or None instead of fp16, or check the data for extreme values"
        )

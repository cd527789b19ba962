"""Seed 003's SGDR schedule as TensorFlow's ``cosine_decay_restarts`` defines it, for ``LambdaLR``.

PyTorch's ``CosineAnnealingWarmRestarts`` takes only an integer period multiplier and no decay of the restart
height, so the port's settings (first period 6,480 steps, ``t_mul`` 1.25, ``m_mul`` 0.95, ``alpha`` 1e-7)
need this form: period ``i`` lasts ``first_steps * t_mul**i`` steps and starts at ``m_mul**i``; within it the
factor falls along a cosine from there to ``alpha`` (as a fraction of the base learning rate).
"""

from __future__ import annotations

import math

SGDR_KEYS = ("first_steps", "t_mul", "m_mul", "alpha")


def sgdr_factor(
    step: int, first_steps: int, t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0
) -> float:
    """The learning-rate factor at ``step`` (0-based)."""
    if first_steps < 1:
        raise ValueError(f"the first SGDR period needs at least one step, got {first_steps}")
    if t_mul <= 0 or m_mul <= 0:
        raise ValueError(f"t_mul and m_mul must be positive, got {t_mul} and {m_mul}")
    fraction = step / first_steps
    if t_mul == 1.0:
        restart = math.floor(fraction)
        fraction -= restart
    else:
        restart = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
        done = (1.0 - t_mul**restart) / (1.0 - t_mul)  # periods before this one, in first periods
        fraction = (fraction - done) / t_mul**restart
    cosine = 0.5 * m_mul**restart * (1.0 + math.cos(math.pi * fraction))
    return (1.0 - alpha) * cosine + alpha


def sgdr_lambda(first_steps: int, t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0):
    """``lr_lambda`` for ``torch.optim.lr_scheduler.LambdaLR``."""
    return lambda step: sgdr_factor(step, first_steps, t_mul, m_mul, alpha)

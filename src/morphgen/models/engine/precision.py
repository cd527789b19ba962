"""Numeric precision of training and sampling: ``fp32``, or ``bf16`` autocast (weights stay float32)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from morphgen.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def autocast_for(
    precision: str, device: torch.device | str
) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of contexts: nothing for ``fp32``; bfloat16 autocast on ``device``'s type for ``bf16``.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed (unlike float16).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext
    device_type = torch.device(device).type
    return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)

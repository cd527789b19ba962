"""Generative model families (compression model + prior) behind one file-based interface.

The registry is imported on first use: it pulls in torch, which the workflow's torch-free parts
(``catalogue``, ``covariates``) must not pay for."""

from morphgen.models.base import ModelFamily

__all__ = ["ModelFamily", "available_families", "build_family", "get_family", "register_family"]


def __getattr__(name: str):
    if name in ("available_families", "build_family", "get_family", "register_family"):
        from morphgen.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

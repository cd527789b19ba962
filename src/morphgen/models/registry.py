"""Model families by name: ``config['model']['family']`` picks one; the catalogue says which module holds it.

``register_family`` lives with the contract (``models.base``) so that a family never imports this layer."""

from __future__ import annotations

import importlib
from pathlib import Path

from morphgen.errors import ConfigError
from morphgen.models.base import _FAMILIES, ModelFamily, register_family
from morphgen.models.catalogue import FAMILIES
from morphgen.models.engine.distributed import distributed_settings, launch
from morphgen.models.engine.preemption import stop_on_signals

__all__ = [
    "available_families",
    "build_family",
    "call_family",
    "get_family",
    "register_family",
    "run_training",
]


def _load_builtin_families() -> None:
    # importing a family's module runs its @register_family decorator; the catalogue names every module
    for spec in FAMILIES.values():
        importlib.import_module(spec.module)


def available_families() -> list[str]:
    """Names of every registered family, sorted."""
    _load_builtin_families()
    return sorted(_FAMILIES)


def get_family(name: str) -> type[ModelFamily]:
    """The family class registered under ``name``; :class:`ConfigError` listing the known ones if none is.

    A family of the catalogue is imported alone (the others' networks are not loaded)."""
    if name not in _FAMILIES and name in FAMILIES:
        importlib.import_module(FAMILIES[name].module)
    if name not in _FAMILIES:
        _load_builtin_families()
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES)) or "none"
        raise ConfigError(f"model.family: unknown model family {name!r}; available: {known}") from None


def build_family(model_cfg: dict) -> ModelFamily:
    """Construct the family named by ``model_cfg['family']`` with ``model_cfg``."""
    if "family" not in model_cfg:
        raise ConfigError("model.family is missing from the configuration")
    return get_family(model_cfg["family"])(model_cfg)


def call_family(model_cfg: dict, method: str, progress: bool = True, **kwargs) -> None:
    """``method`` of the family ``model_cfg`` names, with ``kwargs`` (what each torchrun process runs)."""
    getattr(build_family(model_cfg), method)(**kwargs, progress=progress)


def run_training(model_cfg: dict, method: str, kwargs: dict, job_file: Path) -> None:
    """A family's training ``method`` in this process, or in ``model.distributed.gpus`` torchrun processes.

    Either way a stop signal ends it with a checkpoint and :class:`TrainingInterrupted`.
    """
    gpus, _ = distributed_settings(model_cfg)
    if gpus == 1:
        with stop_on_signals():
            call_family(model_cfg, method, **kwargs)
        return
    job = {"model_cfg": model_cfg, "method": method, **kwargs}
    launch("morphgen.models.registry:call_family", job, gpus, job_file)

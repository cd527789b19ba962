"""Model families by name: ``config['model']['family']`` picks one."""

from __future__ import annotations

from collections.abc import Callable

from morphgen.errors import ConfigError
from morphgen.models.base import ModelFamily

_FAMILIES: dict[str, type[ModelFamily]] = {}


def register_family(name: str) -> Callable[[type[ModelFamily]], type[ModelFamily]]:
    """Class decorator that makes a :class:`ModelFamily` available under ``name``."""

    def decorate(cls: type[ModelFamily]) -> type[ModelFamily]:
        if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
            raise TypeError(f"{cls!r} is not a ModelFamily subclass")
        known = _FAMILIES.get(name)
        if known is not None and known is not cls:
            raise ValueError(
                f"model family {name!r} is already registered by {known.__module__}.{known.__name__}"
            )
        cls.name = name
        _FAMILIES[name] = cls
        return cls

    return decorate


def _load_builtin_families() -> None:
    # importing the package runs the @register_family decorators of the families shipped with morphgen
    import morphgen.models.families  # noqa: F401


def available_families() -> list[str]:
    """Names of every registered family, sorted."""
    _load_builtin_families()
    return sorted(_FAMILIES)


def get_family(name: str) -> type[ModelFamily]:
    """The family class registered under ``name``; :class:`ConfigError` listing the known ones if none is.

    A family of the catalogue is imported alone (the others' networks are not loaded)."""
    import importlib

    from morphgen.models.catalogue import FAMILIES

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

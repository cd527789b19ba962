"""Generative model families (compression model + prior) behind one file-based interface."""

from morphgen.models.base import ModelFamily
from morphgen.models.registry import available_families, build_family, get_family, register_family

__all__ = ["ModelFamily", "available_families", "build_family", "get_family", "register_family"]

"""Families shipped with morphgen; importing this package registers them."""

from morphgen.models.families import vqvae_transformer  # noqa: F401

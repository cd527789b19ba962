"""Families shipped with morphgen; importing this package registers them."""

from morphgen.models.families import latent_diffusion, vqvae_transformer  # noqa: F401

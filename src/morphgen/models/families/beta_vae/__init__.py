"""Seed 001's baseline: a β-VAE with M³AE's encoder and a decoder that paints voxels (``model.family:
beta_vae``)."""

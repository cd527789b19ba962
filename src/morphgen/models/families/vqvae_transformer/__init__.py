"""Seed 000: a 3D VQ-VAE, a causal transformer prior per sub-population, samples ranked by the PatchGAN."""

"""Seed 004: a KL autoencoder and a covariate-conditioned latent diffusion model of the whole cohort."""

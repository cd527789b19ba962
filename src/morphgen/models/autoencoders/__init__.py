"""Compression models (VQ-VAE, FSQ, KL autoencoder) as codecs with their own loss terms, the adversarial
discriminator, their one trainer, the latents they write, and the family base that every autoencoder-based
family builds on."""

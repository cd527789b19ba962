"""Seed 003 (Tudosiu et al. 2020): a multi-level VQ-VAE trained with the Baur or the adaptive 3D-DCT loss
(``model.family: multilevel_vqvae``, once its network and prior are registered)."""

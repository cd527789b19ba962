"""Seed 001: the multiscale metamorphic VAE, a template deformed and repainted at four scales (``model.family:
m3ae``)."""

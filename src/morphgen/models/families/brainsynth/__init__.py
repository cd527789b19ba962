"""Seed 002, BrainSynth (Peng et al.): a split residual VQ autoencoder, a GLM that splits the quantised latent
into a metadata part and a residual, and a masked (absorbing) discrete-diffusion prior over the residual's
codes (``family``)."""

"""The β-VAE as a codec of the shared autoencoder trainer: mean L1 + β KL / N (per-sample sum, as M³AE's),
with M³AE's β ramp."""

from __future__ import annotations

import numpy as np
import torch

from morphgen.models.autoencoders.codecs import Codec, register_codec
from morphgen.models.autoencoders.discriminator import discriminator_config
from morphgen.models.families.beta_vae.network import BetaVAE
from morphgen.models.families.m3ae.codec import PAPER_WEIGHTS
from morphgen.models.families.m3ae.network import network_config


@register_codec
class BetaVAECodec(Codec):
    kind, label, terms, has_codebook = "beta_vae", "beta-VAE", ("kl",), False

    def __init__(self, ae_cfg: dict):
        super().__init__(ae_cfg)
        self.beta = float(ae_cfg.get("beta", PAPER_WEIGHTS["beta"]))
        self.ramp = int(ae_cfg.get("beta_ramp_epochs", PAPER_WEIGHTS["beta_ramp_epochs"]))
        self.beta_now = self.beta if self.ramp <= 0 else 0.0

    def network_config(self, image_shape):
        network = network_config(self.ae_cfg, image_shape)
        network.pop("squaring_steps")
        return {
            **network,
            **discriminator_config(self.ae_cfg, image_shape),
            "kind": self.kind,
            "module": __name__,
        }

    def build(self, network):
        return BetaVAE(network)

    def start_epoch(self, epoch: int) -> None:
        self.beta_now = self.beta * min(1.0, epoch / self.ramp) if self.ramp > 0 else self.beta

    def reconstruct(self, model, images, autocast, recompute=False):
        with autocast():
            recon, mu, logvar = model(images)
        mu, logvar = mu.float(), logvar.float()
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1).mean()
        return mu, recon.float(), {"kl": self.beta_now * kl / float(np.prod(images.shape[2:]))}

    def latents(self, model, images):
        with torch.no_grad():
            mu, _ = model.encode(images)
        means = mu.float().numpy()
        if not np.isfinite(means).all():
            raise ValueError("the encoder gave non-finite latents")
        return means

    @torch.no_grad()
    def reconstruction(self, model, images):
        mu, _ = model.encode(images)
        return model.decode(mu)

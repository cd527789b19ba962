"""The VQ-VAE training losses of Tudosiu et al. 2022 (Eq. 1, 3, 4), from MONAI parts.

* L1 in image space;
* spectral loss: mean squared difference of |FFT| amplitudes (MONAI ``JukeboxLoss``, orthonormal FFT). The
  paper writes "L2 norm of |FFT(x)| - |FFT(x_hat)|"; the authors' code (and MONAI, ported from it) uses the
  mean of the squared differences, which is what this is;
* the VQ commitment loss returned by the VQVAE (the codebook itself is learnt by EMA);
* least-squares PatchGAN loss without output activation (Eq. 4);
* a perceptual term, not available yet: a configured weights file raises :class:`ConfigError`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import JukeboxLoss, PatchAdversarialLoss

from morphgen.errors import ConfigError


class ReconstructionLoss(torch.nn.Module):
    """Weighted L1 + spectral (+ perceptual) loss; returns the total and each unweighted term."""

    def __init__(
        self,
        l1_weight: float,
        fft_weight: float,
        perceptual: torch.nn.Module | None = None,
        perceptual_weight: float = 0.0,
    ):
        super().__init__()
        self.l1_weight = float(l1_weight)
        self.fft_weight = float(fft_weight)
        self.spectral = JukeboxLoss(spatial_dims=3, fft_norm="ortho")
        self.perceptual = perceptual
        self.perceptual_weight = float(perceptual_weight)

    def forward(
        self, recon: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {"l1": F.l1_loss(recon, target), "spectral": self.spectral(recon, target)}
        total = self.l1_weight * terms["l1"] + self.fft_weight * terms["spectral"]
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(recon, target)
            total = total + self.perceptual_weight * terms["perceptual"]
        return total, terms


def build_perceptual_loss(perceptual_cfg: dict | None) -> tuple[torch.nn.Module | None, float]:
    """The perceptual term from ``model.autoencoder.perceptual``: (module, weight), or (None, 0) when off.

    Hook for a later issue: the network must be defined without torchvision and loaded from the configured
    weights file after checking its sha256. Until then, configured weights raise :class:`ConfigError`.
    """
    cfg = perceptual_cfg or {}
    if cfg.get("weights") in (None, "", False):
        return None, 0.0
    raise ConfigError(
        f"model.autoencoder.perceptual.weights is set ({cfg['weights']!r}) but the perceptual loss is not "
        "implemented yet; set it to null"
    )


def adversarial_criterion() -> PatchAdversarialLoss:
    """Least-squares GAN criterion on raw discriminator outputs (targets 1 for real, 0 for fake)."""
    return PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)


def generator_adversarial_loss(criterion: PatchAdversarialLoss, logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. 4: push D(fake) towards 1."""
    return criterion(logits_fake, target_is_real=True, for_discriminator=False)


def discriminator_loss(
    criterion: PatchAdversarialLoss, logits_fake: torch.Tensor, logits_real: torch.Tensor
) -> torch.Tensor:
    """Discriminator side of Eq. 4: 0.5 * (mean (D(fake))^2 + mean (D(real) - 1)^2)."""
    fake = criterion(logits_fake, target_is_real=False, for_discriminator=True)
    real = criterion(logits_real, target_is_real=True, for_discriminator=True)
    return 0.5 * (fake + real)

"""The metamorphic autoencoder as a codec of the shared autoencoder trainer: its loss terms, the β ramp and
the template.

Loss (seed 001, appendix; reductions are seed-specs' choice 1, per-sample sums as the norms are written, over
the number of image voxels, so that the trainer's mean L1 keeps its scale):

    mean|x - x̂| + (β KL + Σᵢ [γ₁ⁱ Σ|x - x⁽ⁱ⁾| + γ₂ⁱ Σ A⁽ⁱ⁾²
                               + γ₃ⁱ Σ|∇v⁽ⁱ⁾|² + γ₄ⁱ Σ(∇·v⁽ⁱ⁾)² + γ₅ⁱ Σ|v⁽ⁱ⁾|²]) / N

β rises linearly from 0 over the first ``beta_ramp_epochs`` epochs (paper: β = 6 over 10; its main text's 3
is not used). The template is the training medoid (the subject nearest the voxel-wise median) unless
``model.autoencoder.template`` names an image on the working grid.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.codecs import Codec, register_codec
from morphgen.models.autoencoders.discriminator import discriminator_config
from morphgen.models.families.m3ae.network import (
    MetamorphicAutoencoder,
    medoid,
    network_config,
    velocity_penalties,
)

# the paper's weights (appendix B): gamma_1 for levels 1-3, gamma_2 for levels 1-4, gamma_3..5 for levels 1-3
PAPER_WEIGHTS = {
    "beta": 6.0,
    "beta_ramp_epochs": 10,
    "level_l1": [0.25, 0.25, 0.5],
    "intensity": [0.6, 1.2, 1.2, 2.4],
    "velocity_gradient": [0.6, 1.2, 1.2],
    "velocity_divergence": [0.6, 1.2, 1.2],
    "velocity_magnitude": [0.6, 1.2, 1.2],
}
TEMPLATE_CANDIDATES = 64  # subjects the medoid is chosen among (evenly spaced over the training list)


def _weights(ae_cfg: dict, key: str, count: int) -> list[float]:
    value = ae_cfg.get(key, PAPER_WEIGHTS[key])
    values = [float(value)] * count if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != count:
        raise ConfigError(
            f"model.autoencoder.{key}: give one weight or one per level ({count}), got {value!r}"
        )
    return values


@register_codec
class MetamorphicCodec(Codec):
    kind, label, has_codebook = "m3ae", "metamorphic autoencoder", False
    terms = ("kl", "level_l1", "intensity", "velocity_gradient", "velocity_divergence", "velocity_magnitude")

    def __init__(self, ae_cfg: dict):
        super().__init__(ae_cfg)
        self.beta = float(ae_cfg.get("beta", PAPER_WEIGHTS["beta"]))
        self.ramp = int(ae_cfg.get("beta_ramp_epochs", PAPER_WEIGHTS["beta_ramp_epochs"]))
        self.beta_now = self.beta if self.ramp <= 0 else 0.0

    def network_config(self, image_shape):
        return {
            **network_config(self.ae_cfg, image_shape),
            **discriminator_config(self.ae_cfg, image_shape),
            "kind": self.kind,
            "module": __name__,
        }

    def build(self, network):
        return MetamorphicAutoencoder(network)

    def start_epoch(self, epoch: int) -> None:
        self.beta_now = self.beta * min(1.0, epoch / self.ramp) if self.ramp > 0 else self.beta

    def level_weights(self, levels: int) -> dict[str, list[float]]:
        warps = levels - 1
        return {
            "level_l1": _weights(self.ae_cfg, "level_l1", warps),
            "intensity": _weights(self.ae_cfg, "intensity", levels),
            "velocity_gradient": _weights(self.ae_cfg, "velocity_gradient", warps),
            "velocity_divergence": _weights(self.ae_cfg, "velocity_divergence", warps),
            "velocity_magnitude": _weights(self.ae_cfg, "velocity_magnitude", warps),
        }

    def initialise(self, model, network, train_data, world):
        choice = self.ae_cfg.get("template", "medoid")
        if choice == "medoid":
            n = len(train_data)
            picks = np.unique(np.linspace(0, n - 1, min(n, TEMPLATE_CANDIDATES)).round().astype(int))
            images = np.stack([train_data.get(int(i))[0].numpy() for i in picks])
            template = images[medoid(images)]
        else:
            path = Path(str(choice))
            if not path.exists():
                raise ConfigError(f"model.autoencoder.template: {path} does not exist (or use: medoid)")
            template = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
            if list(template.shape) != list(network["image_shape"]):
                raise ConfigError(
                    f"model.autoencoder.template: {path} has shape {list(template.shape)}, the working grid "
                    f"is {network['image_shape']}"
                )
        with torch.no_grad():
            image = torch.from_numpy(np.ascontiguousarray(template, dtype=np.float32))
            model.template.copy_(image[None, None])

    def reconstruct(self, model, images, autocast, recompute=False):
        with autocast():
            recon, mu, logvar, parts = model(images)
        mu, logvar = mu.float(), logvar.float()
        n_voxels = float(np.prod(images.shape[2:]))
        weights = self.level_weights(len(parts["intensities"]))
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1).mean()
        level_l1 = sum(
            w * (images - x.float()).abs().mean()
            for w, x in zip(weights["level_l1"], parts["levels"], strict=True)
        )
        intensity = sum(
            w * (a.float() ** 2).flatten(1).sum(1).mean()
            for w, a in zip(weights["intensity"], parts["intensities"], strict=True)
        )
        terms = {
            "kl": self.beta_now * kl / n_voxels,
            "level_l1": level_l1,
            "intensity": intensity / n_voxels,
        }
        factors = model.factors()
        for name in ("gradient", "divergence", "magnitude"):
            terms[f"velocity_{name}"] = torch.zeros((), device=images.device)
        for i, v in enumerate(parts["velocities"]):
            penalties = velocity_penalties(v.float(), factors[i])
            for name, value in penalties.items():
                key = f"velocity_{name}"
                terms[key] = terms[key] + weights[key][i] * value.mean() / n_voxels
        return mu, recon.float(), terms

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

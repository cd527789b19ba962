"""The autoencoder's ``model.pt``: both networks, their config and training info, loadable with
``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import PatchDiscriminator

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.codecs import build_networks
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.weights import load_weights_only

# bump when the content of model.pt changes in a way older readers cannot handle
AUTOENCODER_FORMAT = "morphgen-vqvae-1"  # named before the KL autoencoder, whose files share the layout


def save_autoencoder(
    path: Path, autoencoder: torch.nn.Module, disc: PatchDiscriminator, network: dict, info: dict
) -> Path:
    """Write ``model.pt``: both networks' state dicts, the network config and training info."""
    return save_atomic(
        {
            "format": AUTOENCODER_FORMAT,
            "network": network,
            "autoencoder": autoencoder.state_dict(),
            "discriminator": disc.state_dict(),
            "info": info,
        },
        path,
    )


def load_autoencoder(path: Path) -> tuple[torch.nn.Module, PatchDiscriminator, dict]:
    """Rebuild the autoencoder (VQ-VAE or KL, as its network config says) and discriminator from
    ``model.pt``, in eval mode: (autoencoder, disc, network config)."""
    blob = load_weights_only(path, "autoencoder file")
    if blob.get("format") != AUTOENCODER_FORMAT:
        raise ConfigError(
            f"autoencoder file {path} has format {blob.get('format')!r}, expected {AUTOENCODER_FORMAT}"
        )
    network = blob["network"]
    autoencoder, disc = build_networks(network)
    autoencoder.load_state_dict(blob["autoencoder"])
    disc.load_state_dict(blob["discriminator"])
    return autoencoder.eval(), disc.eval(), network

"""Atomic checkpoints and the final autoencoder file, all loadable with ``torch.load(weights_only=True)``.

Everything stored is tensors, numbers, strings, lists and dicts, so no pickled code runs when loading.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import PatchDiscriminator

from morphgen.errors import ConfigError
from morphgen.models.codecs import build_networks
from morphgen.nifti import atomic_output
from morphgen.weights import load_weights_only

# bump when the content of model.pt changes in a way older readers cannot handle
AUTOENCODER_FORMAT = "morphgen-vqvae-1"  # named before the KL autoencoder, whose files share the layout


def save_atomic(obj: dict, path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path`` and rename it into place."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a handle: the archive's inner name is fixed, not the temporary one
    return Path(path)


def rng_state() -> dict:
    """Torch's CPU random state (the only generator the training loop draws from implicitly)."""
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])


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

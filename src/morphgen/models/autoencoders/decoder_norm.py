"""``model.autoencoder.decoder_norm``: whether the decoder of a GroupNorm network (the normalised VQ-VAE,
the KL autoencoder, both built from MONAI ``AutoencoderKL``'s blocks) keeps its GroupNorm.

GroupNorm gives each group of an image's features the same mean and variance over the whole image, for every
image alike. In the decoder that pulls every reconstruction towards the same intensity statistics whatever
its code says: the demo's reconstructions all had one mean brain intensity while their subjects' spanned
their scanners' contrasts, and without it the decoder learnt each subject faster (BENCHMARKS.md). The encoder
keeps its GroupNorm, which keeps its units alive.
"""

from __future__ import annotations

import torch

from morphgen.errors import ConfigError

DECODER_NORMS = ("group", "none")


def decoder_norm_of(ae_cfg: dict) -> str:
    """``model.autoencoder.decoder_norm`` (default ``group``); ConfigError for anything else."""
    value = str(ae_cfg.get("decoder_norm", "group"))
    if value not in DECODER_NORMS:
        raise ConfigError(f"model.autoencoder.decoder_norm: one of {list(DECODER_NORMS)}, got {value!r}")
    return value


def with_decoder_norm(net: dict, ae_cfg: dict) -> dict:
    """``net`` with ``decoder_norm`` when it is not the default, so that networks described before the key
    existed keep their description (and a shipped model still fine-tunes)."""
    value = decoder_norm_of(ae_cfg)
    return net if value == "group" else {**net, "decoder_norm": value}


def apply_decoder_norm(decoder: torch.nn.Module, net: dict) -> None:
    """Take every GroupNorm out of ``decoder`` (the identity instead) when ``net`` says ``none``."""
    if net.get("decoder_norm", "group") == "none":
        _without_group_norm(decoder)


def _without_group_norm(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.GroupNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            _without_group_norm(child)

"""What the autoencoder trainer needs to know of a compression model, so one trainer serves every family.

A codec describes one kind of autoencoder: how its network config is made from ``config['model']
['autoencoder']`` (stored in every checkpoint, so a model rebuilds without config.yaml), how it is built, and
its training forward pass, which returns the encoder outputs, the reconstruction and its own named loss terms
(the VQ-VAE's commitment loss, the KL autoencoder's weighted KL divergence, the metamorphic autoencoder's KL
and deformation penalties), each a column of loss.tsv. All are trained with the same PatchGAN discriminator,
reconstruction losses, resumption, pre-emption and several processes.

A codec outside this module registers itself with :func:`register_codec` and names its module in its
network config (``module``), so that a stored model finds its codec without the caller importing it.
"""

from __future__ import annotations

import abc
import importlib

import numpy as np
import torch

from morphgen.errors import ConfigError
from morphgen.models.autoencoders import kl_autoencoder, vqvae
from morphgen.models.autoencoders.discriminator import build_discriminator, discriminator_config

# model.autoencoder.kl_weight: MONAI's brain LDM tutorials use 1e-6 (the KL term sums over the latent grid)
KL_WEIGHT = 1e-6


class Codec(abc.ABC):
    """One kind of autoencoder. ``kind`` is stored in its network config (absent: a VQ-VAE)."""

    kind: str = ""
    label: str = ""  # for progress bars and messages
    terms: tuple[str, ...] = ()  # the names of the loss terms :meth:`reconstruct` adds (loss.tsv columns)
    has_codebook: bool = False  # codebook use is tracked and dead codes restarted
    restarts_codes: bool = False  # its own codebooks: :meth:`restart_codes` after every update

    def __init__(self, ae_cfg: dict):
        self.ae_cfg = ae_cfg

    @abc.abstractmethod
    def network_config(self, image_shape: tuple[int, ...]) -> dict:
        """The plain-dict description of the autoencoder and its discriminator."""

    @abc.abstractmethod
    def build(self, network: dict) -> torch.nn.Module: ...

    @abc.abstractmethod
    def reconstruct(
        self, model: torch.nn.Module, images: torch.Tensor, autocast, recompute: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Training forward pass: (encoder outputs, reconstruction in float32, loss terms): the terms are
        float32 scalars named as :attr:`terms`, each already weighted; the trainer adds them to the loss."""

    def start_epoch(self, epoch: int) -> None:
        """Called before (0-based) ``epoch`` is trained and validated (for terms that vary by epoch)."""
        return None

    def initialise(self, model: torch.nn.Module, network: dict, train_data, world) -> None:
        """Before the first step of a training from scratch (not fine-tuning): buffers that depend on the
        training images (``train_data``, an ``engine.data.VolumeDataset``), equal on every process of
        ``world``."""
        return None

    def restart_codes(self, model: torch.nn.Module, encodings, world, generator: torch.Generator) -> int:
        """After an update (with :attr:`restarts_codes`): move the codes of the codec's own codebooks that
        fell out of use onto encoder outputs of the step (``encodings``, as :meth:`reconstruct` returned
        them; each process's, gathered through ``world``), drawing with ``generator``; the number moved."""
        return 0

    @abc.abstractmethod
    def latents(self, model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
        """What ``encode`` stores for a batch (model in eval mode); ValueError if it is not usable."""

    @abc.abstractmethod
    def reconstruction(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The eval-mode reconstruction of a batch (what the reconstruction metrics judge)."""


class VQCodec(Codec):
    """The VQ-VAE of seed 000 (``morphgen.models.autoencoders.vqvae``): EMA codebook, commitment loss."""

    kind, label, terms, has_codebook = "vqvae", "VQ-VAE", ("quantisation",), True

    def network_config(self, image_shape):
        return vqvae.network_config(self.ae_cfg, image_shape)

    def build(self, network):
        return vqvae.build_vqvae(network)

    def reconstruct(self, model, images, autocast, recompute=False):
        with autocast():
            encodings = vqvae.encode(model, images, recompute)
        encodings = encodings.float()  # codebook distances and losses stay float32 at any precision
        quantised, quantisation = model.quantize(encodings)
        with autocast():
            recon = vqvae.decode(model, quantised, recompute)
        return encodings, recon.float(), {"quantisation": quantisation}

    def initialise(self, model, network, train_data, world):
        if not network.get("subtract_mean"):
            return
        with torch.no_grad():  # each process sums its share of the images
            total = torch.zeros((1, *train_data.shape))
            for i in world.share(len(train_data)):
                total += train_data.get(i)
            device = next(model.parameters()).device
            vqvae.set_mean_image(model, world.all_reduce(total.to(device)) / len(train_data))

    def latents(self, model, images):
        codebook_size = model.num_embeddings
        tokens = vqvae.encode_tokens(model, images).numpy()
        if tokens.min() < 0 or tokens.max() >= codebook_size:
            raise ValueError("token index outside the codebook")
        return tokens.astype(vqvae.token_dtype(codebook_size))

    @torch.no_grad()
    def reconstruction(self, model, images):
        return model(images)[0]


class KLCodec(Codec):
    """The KL autoencoder of seed 004 (``autoencoders.kl_autoencoder``): Gaussian latents, KL term."""

    kind, label, terms, has_codebook = "kl", "KL autoencoder", ("kl",), False

    def network_config(self, image_shape):
        return {
            **kl_autoencoder.network_config(self.ae_cfg, image_shape),
            **discriminator_config(self.ae_cfg, image_shape),
            "kind": self.kind,
            "image_shape": [int(s) for s in image_shape],
        }

    def build(self, network):
        return kl_autoencoder.build_autoencoder_kl(network)

    def reconstruct(self, model, images, autocast, recompute=False):
        with autocast():
            recon, z_mu, z_sigma = model(images)
        weight = float(self.ae_cfg.get("kl_weight", KL_WEIGHT))
        return z_mu.float(), recon.float(), {"kl": weight * kl_autoencoder.kl_divergence(z_mu, z_sigma)}

    def latents(self, model, images):
        means = kl_autoencoder.latent_means(model, images).float().numpy()
        if not np.isfinite(means).all():
            raise ValueError("the encoder gave non-finite latents")
        return means

    @torch.no_grad()
    def reconstruction(self, model, images):
        return model.decode(kl_autoencoder.latent_means(model, images))


CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: the codec of network configs whose ``kind`` is ``cls.kind``."""
    known = CODECS.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(f"autoencoder kind {cls.kind!r} is already registered by {known.__module__}")
    CODECS[cls.kind] = cls
    return cls


register_codec(VQCodec)
register_codec(KLCodec)


def codec_of(network: dict, ae_cfg: dict | None = None) -> Codec:
    """The codec of a stored network config (one without ``kind`` is a VQ-VAE; ``module`` is imported to
    register a codec defined elsewhere)."""
    kind = network.get("kind", VQCodec.kind)
    if kind not in CODECS and network.get("module"):
        importlib.import_module(network["module"])
    if kind not in CODECS:
        raise ConfigError(f"unknown autoencoder kind {kind!r}; known: {sorted(CODECS)}")
    return CODECS[kind](ae_cfg or {})


def build_networks(network: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(autoencoder, discriminator) of a stored network config, with fresh weights."""
    return codec_of(network).build(network), build_discriminator(network)

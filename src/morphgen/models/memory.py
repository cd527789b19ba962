"""Training-memory estimates of the VQ-VAE without allocating it: which batch fits a GPU of a given size.

A training step keeps, besides weights, gradients and Adam's two moments (four float32 copies of every
parameter), the activations autograd saves for the backward pass. Those are counted by running the step's
forward pass on PyTorch's ``meta`` device (shapes only, no memory, a second on CPU) with a hook on every saved
tensor. bf16 autocast is modelled by tracing in bfloat16, plus the bfloat16 weight copies autocast keeps.
With per-block activation checkpointing only each block's input is kept, and the backward pass recomputes
one block at a time, so the peak adds the largest block's activations.

These are estimates: allocator fragmentation, cuDNN workspaces and the CUDA context (about 0.5-1 GB) come
on top, which is why :func:`largest_batch` leaves headroom. ``benchmarks/memory_plan.py`` prints them and,
on a GPU, measures the real peak next to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from morphgen.models.autoencoders.discriminator import build_discriminator
from morphgen.models.autoencoders.vqvae import build_vqvae, network_config

GIB = 2**30
ADAM_COPIES = 4  # weights, gradients, two moments


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step at batch 1: ``fixed`` (weights, grads, Adam) and ``per_sample``."""

    fixed: int
    per_sample: int

    def total(self, batch_size: int) -> int:
        return self.fixed + batch_size * self.per_sample


def _saved_bytes(fn, *args, seen: dict[int, int] | None = None) -> int:
    """Bytes of the distinct tensors autograd saves while running ``fn(*args)``; ``seen`` (storage -> bytes)
    can be shared between calls so that a tensor saved by two blocks counts once."""
    seen = {} if seen is None else seen

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()  # views and in-place results share one (also on meta)
        seen[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(*args)
    return sum(seen.values())


def _block_costs(
    blocks: torch.nn.ModuleList, x: torch.Tensor, seen: dict[int, int]
) -> tuple[list[int], list[int], torch.Tensor]:
    """Per block: bytes saved inside it and bytes of its input; and the output of the last block.

    Every saved tensor is also recorded in ``seen``, for the total without checkpointing."""
    inside, inputs = [], []
    for block in blocks:
        inputs.append(x.numel() * x.element_size())
        outputs: list[torch.Tensor] = []
        local: dict[int, int] = {}
        inside.append(_saved_bytes(lambda b=block, t=x, o=outputs: o.append(b(t)), seen=local))
        seen.update(local)
        x = outputs[0]
    return inside, inputs, x


def estimate_autoencoder_training(
    ae_cfg: dict, image_shape: tuple[int, int, int], precision: str = "fp32", recompute: bool = False
) -> MemoryEstimate:
    """Memory of one VQ-VAE + discriminator training step (GAN terms on), from ``model.autoencoder``."""
    net = network_config(ae_cfg, image_shape)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.device("meta"):
        vqvae = build_vqvae(net).to(dtype)
        disc = build_discriminator(net).to(dtype)
        images = torch.zeros(1, 1, *image_shape, dtype=dtype)
        network_saved: dict[int, int] = {}
        enc_inside, enc_inputs, encodings = _block_costs(vqvae.encoder.blocks, images, network_saved)
        quantised = encodings.float().detach().requires_grad_()
        codes = _saved_bytes(lambda: vqvae.quantize(quantised))
        quantised = quantised.to(dtype)
        dec_inside, dec_inputs, recon = _block_costs(vqvae.decoder.blocks, quantised, network_saved)
        recon = recon.float()
        # L1 + FFT amplitude on float32 images; the generator step's discriminator pass (the
        # discriminator step comes after the generator's graph is freed, and needs less)
        losses = _saved_bytes(
            lambda: (recon - images.float()).abs().mean() + torch.fft.fftn(recon).abs().mean()
        )
        critic = _saved_bytes(lambda: disc(recon.to(dtype))[-1].float().mean())
    if recompute:
        activations = sum(enc_inputs) + sum(dec_inputs) + max(enc_inside + dec_inside)
    else:
        activations = sum(network_saved.values())
    per_sample = activations + codes + losses + critic
    params = sum(p.numel() for p in vqvae.parameters()) + sum(p.numel() for p in disc.parameters())
    fixed = ADAM_COPIES * 4 * params + (2 * params if precision == "bf16" else 0)
    return MemoryEstimate(fixed=fixed, per_sample=per_sample)


def largest_batch(estimate: MemoryEstimate, gpu_gib: float, headroom: float = 0.8) -> int:
    """The largest batch whose estimate fits in ``headroom`` of a GPU of ``gpu_gib`` GiB (0: none fits)."""
    budget = headroom * gpu_gib * GIB - estimate.fixed
    return max(0, int(budget // estimate.per_sample))


def estimate_prior_training(
    prior_cfg: dict, seq_len: int, codebook_size: int, precision: str = "fp32"
) -> MemoryEstimate:
    """Memory of one prior training step from ``model.prior`` (AdamW: four float32 copies of the weights).

    On the meta device ``scaled_dot_product_attention`` takes its reference path, which saves the attention
    weights; the fused GPU kernels do not, so this errs high for exact attention.
    """
    from morphgen.models.families.vqvae_transformer.prior import build_prior

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def saved_by(cfg: dict) -> tuple[int, int]:
        with torch.device("meta"):
            model = build_prior(codebook_size, seq_len, {**cfg, "dropout": 0.0}).to(dtype)
            tokens = torch.zeros(1, seq_len, dtype=torch.long)
            model.train()
            saved = _saved_bytes(
                lambda: torch.nn.functional.cross_entropy(
                    model(tokens).flatten(0, 1).float(), tokens.flatten()
                )
            )
        return saved, sum(p.numel() for p in model.parameters())

    saved, params = saved_by(prior_cfg)
    if prior_cfg.get("activation_checkpointing"):
        # the hooks see only what lies between blocks; the backward pass recomputes one block at a time
        full, _ = saved_by({**prior_cfg, "activation_checkpointing": False})
        saved += full // max(1, int(prior_cfg["layers"]))
    fixed = ADAM_COPIES * 4 * params + (2 * params if precision == "bf16" else 0)
    return MemoryEstimate(fixed=fixed, per_sample=saved)

"""Latent diffusion (seed 004): a conditioned MONAI ``DiffusionModelUNet``, DDPM training, DDPM/DDIM sampling.

Conditioning is the seed's hybrid one (Rombach et al. 2022): the normalised covariates are concatenated to the
noisy latent as constant channels and are also the context of the U-Net's cross-attention. The noise process
(``model.diffusion.schedule`` and ``prediction``) is kept in ``model.pt``: sampling uses what training used.

Classifier-free guidance (Ho & Salimans 2021; not used by seed 004) is optional: a model trained with
``model.diffusion.condition_dropout`` > 0 sees its covariates withheld for that fraction of the training
latents, and takes one more covariate input saying whether they are given (:func:`guidance_input`). Sampled
with ``model.sampling.guidance_scale`` w, its estimate is unconditioned + w (conditioned - unconditioned):
w = 1 is the conditioned estimate alone, w > 1 follows the covariates more closely at the cost of diversity.
"""

from __future__ import annotations

import sys

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from tqdm import tqdm

from morphgen.errors import ConfigError

TRAIN_STEPS = 1000
# the betas of the brain LDM released with seed 004 (MONAI generative model zoo). Seed 004's "linear" schedule
# is that of the latent diffusion code it builds on, linear in sqrt(beta): MONAI's scaled_linear_beta.
BETA_START, BETA_END = 0.0015, 0.0205
SCHEDULES = ("scaled_linear_beta", "linear_beta")
# what the U-Net estimates: the added noise (seed 004) or the velocity sqrt(abar) noise - sqrt(1 - abar) x0,
# whose errors are not multiplied by 1 / sqrt(abar) when the clean latent is read off at the noisiest steps
PREDICTIONS = ("epsilon", "v_prediction")
SEED_PROCESS = {"schedule": "scaled_linear_beta", "prediction": "epsilon"}
# what models trained before the process was configurable used, for their model.pt files
FORMER_PROCESS = {"schedule": "linear_beta", "prediction": "epsilon"}


def noise_process(diffusion_cfg: dict) -> dict:
    """The schedule and the prediction target of ``model.diffusion`` (defaults: seed 004's)."""
    process = {key: str(diffusion_cfg.get(key, default)) for key, default in SEED_PROCESS.items()}
    for key, allowed in (("schedule", SCHEDULES), ("prediction", PREDICTIONS)):
        if process[key] not in allowed:
            raise ConfigError(f"model.diffusion.{key}: {process[key]!r} is not one of {', '.join(allowed)}")
    return process


def condition_dropout(diffusion_cfg: dict) -> float:
    """``model.diffusion.condition_dropout``: the fraction of training latents whose covariates are withheld,
    for classifier-free guidance (default 0: seed 004, no guidance)."""
    value = float(diffusion_cfg.get("condition_dropout", 0.0))
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"model.diffusion.condition_dropout: {value} is not in [0, 1)")
    return value


def unet_config(diffusion_cfg: dict, latent_channels: int, n_covariates: int) -> dict:
    """The U-Net's constructor arguments: latent channels in and out, covariates as channels and context."""
    channels = list(diffusion_cfg.get("channels", [64, 128, 128]))
    attention = list(diffusion_cfg.get("attention_levels", [False, True, True]))
    if len(attention) != len(channels):
        raise ConfigError(
            f"model.diffusion: {len(channels)} channels but {len(attention)} attention_levels (one per level)"
        )
    levels = list(zip(attention, channels, strict=True))
    if n_covariates < 1:
        raise ConfigError("model.diffusion needs at least one covariate to condition on")
    return {
        "spatial_dims": 3,
        "in_channels": latent_channels + n_covariates,
        "out_channels": latent_channels,
        "channels": channels,
        "attention_levels": attention,
        "num_res_blocks": int(diffusion_cfg.get("num_res_blocks", 2)),
        # one attention head per level that has attention, as wide as the level
        "num_head_channels": list(diffusion_cfg.get("num_head_channels", [c if a else 0 for a, c in levels])),
        "norm_num_groups": int(diffusion_cfg.get("norm_num_groups", 32)),
        "with_conditioning": True,
        "cross_attention_dim": n_covariates,
    }


def build_unet(net: dict) -> DiffusionModelUNet:
    return DiffusionModelUNet(**net)


def make_scheduler(
    kind: str, inference_steps: int | None = None, process: dict | None = None
) -> DDPMScheduler | DDIMScheduler:
    """``ddpm`` (all 1,000 steps unless ``inference_steps``; what training uses) or ``ddim``, for the noise
    ``process`` of :func:`noise_process` (default: seed 004's)."""
    process = process or SEED_PROCESS
    common = {
        "num_train_timesteps": TRAIN_STEPS,
        "schedule": process["schedule"],
        "beta_start": BETA_START,
        "beta_end": BETA_END,
        "clip_sample": False,  # latents are not bounded like images
        "prediction_type": process["prediction"],
    }
    if kind == "ddpm":
        scheduler = DDPMScheduler(**common)
    elif kind == "ddim":
        scheduler = DDIMScheduler(**common)
    else:
        raise ConfigError(f"sampler {kind!r}: use ddpm or ddim")
    if inference_steps is not None:
        if not 1 <= inference_steps <= TRAIN_STEPS:
            raise ConfigError(f"sampling steps must be between 1 and {TRAIN_STEPS}, got {inference_steps}")
        scheduler.set_timesteps(int(inference_steps))
    return scheduler


def estimate(
    unet: torch.nn.Module, latents: torch.Tensor, timesteps: torch.Tensor, covariates: torch.Tensor
) -> torch.Tensor:
    """The U-Net's estimate (of the noise or of the velocity, as trained), the covariates (batch, k) given as
    channels and as attention context."""
    channels = covariates[:, :, None, None, None].expand(-1, -1, *latents.shape[2:])
    return unet(torch.cat([latents, channels], dim=1), timesteps=timesteps, context=covariates[:, None, :])


def guidance_input(covariates: torch.Tensor, given: torch.Tensor | bool = True) -> torch.Tensor:
    """The covariates (batch, k) of a model trained for guidance: (batch, k + 1), the last column 1 where they
    are ``given`` and 0 where withheld, the covariates then zeroed (the "null" condition)."""
    if isinstance(given, bool):
        given = torch.full((covariates.shape[0],), given, device=covariates.device)
    flag = given.to(device=covariates.device, dtype=covariates.dtype)[:, None]
    return torch.cat([covariates * flag, flag], dim=1)


def sampling_covariates(
    covariates: torch.Tensor, trained_for_guidance: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What :func:`sample_latents` takes for ``covariates``: them and the null covariates for a model trained
    with withheld covariates, else them as they are and None."""
    if not trained_for_guidance:
        return covariates, None
    return guidance_input(covariates), guidance_input(torch.zeros_like(covariates), False)


def guided_estimate(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    covariates: torch.Tensor,
    unconditioned: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Classifier-free guidance: unconditioned + ``scale`` (conditioned - unconditioned), the two estimates
    made in one batch; ``covariates`` and ``unconditioned`` as :func:`guidance_input` makes them."""
    both = estimate(
        unet,
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        torch.cat([covariates, unconditioned]),
    )
    conditioned, free = both.chunk(2)
    return free + scale * (conditioned - free)


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    covariates: torch.Tensor,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDPM's simple loss: MSE between the U-Net's estimate and its target, the noise added at a step (random
    unless given) or the velocity, as the scheduler's ``prediction_type`` says.

    Timesteps and noise are drawn on the generator's device and moved to the latents': a CPU generator
    (the trainer's, seeded per step) then gives the same draws whether the U-Net runs on CPU or GPU.
    """
    draw_on = generator.device if generator is not None else latents.device
    if timesteps is None:
        n = latents.shape[0]
        timesteps = torch.randint(0, TRAIN_STEPS, (n,), generator=generator, device=draw_on)
    timesteps = timesteps.to(latents.device)
    noise = torch.randn(latents.shape, generator=generator, device=draw_on, dtype=latents.dtype)
    noise = noise.to(latents.device)
    noisy = scheduler.add_noise(original_samples=latents, noise=noise, timesteps=timesteps)
    if scheduler.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return torch.nn.functional.mse_loss(estimate(unet, noisy, timesteps, covariates), target)


@torch.no_grad()
def sample_latents(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler | DDIMScheduler,
    covariates: torch.Tensor,
    latent_shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    progress: bool = True,
    noise: torch.Tensor | None = None,
    unconditioned: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """Latents (batch, *latent_shape) for covariates (batch, k), from Gaussian noise by the scheduler's steps.

    The same generator state gives the same latents. DDIM is deterministic after the first draw (eta 0), which
    ``noise`` (batch, *latent_shape) replaces: samples that start from the same noise differ only by what
    their covariates change. With ``unconditioned`` (the null covariates of :func:`guidance_input`, batch
    rows) and a ``guidance_scale`` other than 1, every step uses :func:`guided_estimate`; such a scale
    without ``unconditioned`` is refused rather than ignored.
    """
    if guidance_scale != 1.0 and unconditioned is None:
        raise ValueError(f"guidance scale {guidance_scale:g} needs the unconditioned covariates to guide by")
    guided = guidance_scale != 1.0
    device = covariates.device
    if guided:
        unconditioned = unconditioned.to(device)
    if noise is None:
        draw_on = generator.device if generator is not None else device
        noise = torch.randn((covariates.shape[0], *latent_shape), generator=generator, device=draw_on)
    x = noise.to(device)
    was_training = unet.training
    unet.eval()
    try:
        for t in tqdm(
            scheduler.timesteps, desc="denoising", unit="step", file=sys.stderr, disable=not progress
        ):
            timesteps = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
            if guided:
                output = guided_estimate(unet, x, timesteps, covariates, unconditioned, guidance_scale)
            else:
                output = estimate(unet, x, timesteps, covariates)
            if isinstance(scheduler, DDPMScheduler):
                x, _ = scheduler.step(output, int(t), x, generator=generator)
            else:
                x, _ = scheduler.step(output, int(t), x)
    finally:
        unet.train(was_training)
    return x

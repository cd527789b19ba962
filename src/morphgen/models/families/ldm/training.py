"""Training the conditioned latent diffusion model: resumable mid-epoch, deterministic on CPU for a seed.

Each step's timesteps and noise come from a generator seeded by (seed, step), and each epoch's order from
(seed, epoch), so a run stopped by a signal and resumed from ``checkpoints/last.pt`` ends with the weights of
an uninterrupted one. The latents are scaled to unit variance by the training set's scale factor; the
covariates arrive normalised (``morphgen.models.covariates``). The validation loss uses the same noise and
timesteps every epoch, so epochs compare.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.kl_autoencoder import scale_factor
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.models.engine.data import torch_generator
from morphgen.models.engine.loop import EpochLoop
from morphgen.models.engine.resume import RunCheckpoint
from morphgen.models.families.ldm.diffusion import (
    TRAIN_STEPS,
    build_unet,
    condition_dropout,
    diffusion_loss,
    guidance_input,
    make_scheduler,
    noise_process,
    unet_config,
)
from morphgen.tsv import write_tsv
from morphgen.weights import load_weights_only

CHECKPOINT_FORMAT = "morphgen-ldm-checkpoint-2"  # 2: the shared epoch loop's layout
MODEL_FORMAT = "morphgen-ldm-1"
LOSS_COLUMNS = ["epoch", "step", "train_mse", "val_mse"]


def _fingerprint(arrays: list[np.ndarray], cfg: dict, seed: int) -> str:
    """What a checkpoint must match to be resumed: data, settings and seed."""
    digest = hashlib.sha256()
    for arr in arrays:
        digest.update(str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return json.dumps({"data": digest.hexdigest(), "cfg": cfg, "seed": seed}, sort_keys=True, default=str)


def _order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch_generator(seed, "diffusion order", epoch))


@torch.no_grad()
def validation_mse(unet, scheduler, latents: torch.Tensor, covariates: torch.Tensor, seed: int, batch: int):
    """Mean noise-estimate error on held-out latents at fixed, evenly spread timesteps and fixed noise."""
    if len(latents) == 0:
        return math.nan
    unet.eval()
    timesteps = torch.linspace(0, TRAIN_STEPS - 1, len(latents)).long()
    generator = torch_generator(seed, "diffusion validation")
    total = 0.0
    for i in range(0, len(latents), batch):
        part = slice(i, i + batch)
        x, c, t = latents[part], covariates[part], timesteps[part].to(latents.device)
        total += float(diffusion_loss(unet, scheduler, x, c, generator, t)) * len(x)
    unet.train()
    return total / len(latents)


class _NoEstimate(torch.nn.Module):
    """A "network" that estimates zero (noise or velocity): the baseline of the held-out denoising error."""

    def forward(self, x, timesteps, context):
        return torch.zeros_like(x[:, : x.shape[1] - context.shape[-1]])

    def train(self, mode: bool = True):
        return self


def train_diffusion(
    train_latents: np.ndarray,
    train_covariates: np.ndarray,
    val_latents: np.ndarray,
    val_covariates: np.ndarray,
    cfg: dict,
    out_dir: Path,
    seed: int,
    extra: dict | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Train (or resume) the diffusion U-Net in ``out_dir``; returns the path of ``model.pt``.

    ``*_latents``: (n, channels, h, w, d) encoder means; ``*_covariates``: (n, k) normalised covariates.
    ``cfg``: ``config['model']['diffusion']`` (epochs, batch_size, lr, the U-Net's shape, the noise process of
    :func:`morphgen.models.families.ldm.diffusion.noise_process`, which ``model.pt`` keeps as ``process``, and
    ``condition_dropout``, which it also keeps: above 0 the model can be sampled with guidance). ``extra``
    goes into ``model.pt`` as is (the covariate ranges, for instance). Writes ``loss.tsv`` every epoch and
    ``checkpoints/last.pt`` every epoch and on a stop signal (:class:`TrainingInterrupted`); at the end
    ``heldout.tsv``: the held-out denoising error (``model_mse``), that of estimating zero (no noise, or no
    velocity: ``no_estimate_mse``, about 1 either way for unit-variance latents) and their ``ratio``.
    """
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if train_latents.ndim != 5 or len(train_latents) != len(train_covariates):
        raise ConfigError(
            f"diffusion training needs latents (n, c, h, w, d) and covariates (n, k) of the same n, got "
            f"{train_latents.shape} and {train_covariates.shape}"
        )
    try:
        epochs, batch_size, lr = int(cfg["epochs"]), int(cfg["batch_size"]), float(cfg["lr"])
    except KeyError as exc:
        raise ConfigError(f"model.diffusion.{exc.args[0]} is missing from the configuration") from None
    scale = scale_factor(torch.from_numpy(train_latents))
    dropout = condition_dropout(cfg)
    # a model trained for guidance takes one more covariate: whether the others are given
    net = unet_config(cfg, train_latents.shape[1], train_covariates.shape[1] + (dropout > 0))
    torch.manual_seed(seed)
    unet = build_unet(net).to(device)
    optimiser = torch.optim.Adam(unet.parameters(), lr=lr)
    process = noise_process(cfg)
    scheduler = make_scheduler("ddpm", process=process)
    x = torch.from_numpy(train_latents).float().to(device) * scale
    c = torch.from_numpy(train_covariates).float().to(device)
    val_x = torch.from_numpy(val_latents).float().to(device) * scale
    val_c = torch.from_numpy(val_covariates).float().to(device)
    if dropout > 0:
        val_c = guidance_input(val_c)  # validated conditioned

    arrays = [train_latents, train_covariates, val_latents, val_covariates]
    fingerprint = _fingerprint(arrays, {**cfg, **process}, seed)  # the process: defaults may change

    def update(index: torch.Tensor, step: int) -> torch.Tensor:
        index = index.to(device)
        cov = c[index]
        if dropout > 0:
            draw = torch.rand(len(index), generator=torch_generator(seed, "withheld", step))
            cov = guidance_input(cov, draw >= dropout)
        loss = diffusion_loss(unet, scheduler, x[index], cov, torch_generator(seed, "step", step))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss

    loop = EpochLoop(
        run=RunCheckpoint(out_dir, CHECKPOINT_FORMAT, fingerprint, "diffusion"),
        parts={"model": unet, "optimiser": optimiser},
        examples=len(x),
        batch_size=batch_size,
        epochs=epochs,
        order=lambda epoch: _order(len(x), seed, epoch),
        update=update,
        validate=lambda: validation_mse(unet, scheduler, val_x, val_c, seed, batch_size),
        loss_table=out_dir / "loss.tsv",
        columns=LOSS_COLUMNS,
        description="diffusion training steps",
    )
    history = loop.fit(progress)

    # held out: the denoising error against that of estimating no noise at all (the noise's mean square)
    model_mse = history[-1][3]  # the last epoch's validation: the same noise, timesteps and weights
    baseline = validation_mse(_NoEstimate(), scheduler, val_x, val_c, seed, batch_size)
    heldout = {"model_mse": model_mse, "no_estimate_mse": baseline, "ratio": model_mse / baseline}
    write_tsv(pd.DataFrame([{**heldout, "val_latents": len(val_x)}]), out_dir / "heldout.tsv")
    path = out_dir / "model.pt"
    save_atomic(
        {
            "format": MODEL_FORMAT,
            "network": net,
            "state_dict": {k: v.detach().cpu() for k, v in unet.state_dict().items()},
            "scale_factor": scale,
            "process": process,
            "condition_dropout": dropout,
            "latent_shape": list(train_latents.shape[1:]),
            "seed": seed,
            "info": {"epochs": loop.epoch, "steps": loop.step, "n_train": len(x), **(extra or {})},
        },
        path,
    )
    return path


def load_diffusion(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The U-Net of a ``model.pt`` of :func:`train_diffusion`, in eval mode, and the file's content."""
    saved = load_weights_only(path, "diffusion model file")
    if saved.get("format") != MODEL_FORMAT:
        raise ConfigError(
            f"{path} is not a morphgen latent diffusion model (expected format {MODEL_FORMAT!r})"
        )
    unet = build_unet(saved["network"])
    unet.load_state_dict(saved["state_dict"])
    return unet.to(device).eval(), saved

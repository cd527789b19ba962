"""Latent diffusion conditioned on covariates (Pinaya et al. 2022, seed 004).

* autoencoder: MONAI ``AutoencoderKL`` with the PatchGAN discriminator, trained, encoded and evaluated as
  every autoencoder family (``families.autoencoding``); latents are the encoder's means, float32
  (copies, channels, h, w, d);
* prior: a MONAI ``DiffusionModelUNet`` over latents scaled to unit variance, conditioned on the subjects'
  covariates (``model.conditioning.covariates``: age, sex, ventricular and brain volume by default),
  min-max normalised with the training subjects' ranges, which ``model.pt`` keeps
  (``morphgen.models.diffusion_training``);
* generation: each sample is conditioned on the covariates of a training subject of the sub-population drawn
  at random, denoised by DDIM (``model.sampling.sampler``, ``steps``: seed 004 uses 50) or DDPM, decoded,
  clipped to [0, 1] and ranked by the mean PatchGAN output, as in the VQ-VAE family.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from morphgen.errors import ConfigError, SubjectError
from morphgen.models.checkpoint import load_autoencoder
from morphgen.models.codecs import KLCodec
from morphgen.models.covariates import ID, CovariateScaler, covariate_columns
from morphgen.models.data import torch_generator
from morphgen.models.diffusion import make_scheduler, sample_latents
from morphgen.models.families.autoencoding import AutoencoderFamily
from morphgen.models.generation import checked_counts, generation_checkpoint, write_kept
from morphgen.models.latents import read_latents
from morphgen.models.registry import register_family
from morphgen.models.selection import BestSamples
from morphgen.models.vqvae import discriminator_score


def load_latents(paths: list[Path], copies: str = "all") -> tuple[np.ndarray, list[str]]:
    """Latent means (N, channels, h, w, d) of every copy (``"all"``) or copy 0 (``"first"``) of each file,
    and the subject of each row (the file's name)."""
    arrays, subjects = read_latents(paths, copies, 5, np.floating, "float latents (copies, c, h, w, d)")
    return np.concatenate(arrays).astype(np.float32), subjects


@register_family("ldm")
class LatentDiffusionFamily(AutoencoderFamily):
    """Seed 004's model, from ``config['model']``: autoencoder, diffusion, conditioning, sampling."""

    codec_class = KLCodec
    conditioned = True

    def __init__(self, model_cfg: dict):
        super().__init__(model_cfg)
        for section in ("diffusion", "sampling"):
            if not isinstance(model_cfg.get(section), dict):
                raise ConfigError(f"model.{section} is missing from the configuration (model.family: ldm)")
        self.diffusion_cfg: dict = model_cfg["diffusion"]
        self.sampling_cfg: dict = model_cfg["sampling"]
        self.covariate_columns = covariate_columns(model_cfg.get("conditioning"))

    # ---- prior ---------------------------------------------------------------------------------------------
    def fit_prior(
        self,
        latents: list[Path],
        val_latents: list[Path],
        out_dir: Path,
        progress: bool = True,
        covariates: pd.DataFrame | None = None,
    ) -> None:
        """Train the conditioned diffusion model on every copy of ``latents``; validate on copy 0 of
        ``val_latents``. Files: those of :func:`morphgen.models.diffusion_training.train_diffusion`; its
        ``model.pt`` also keeps the covariate ranges and each training subject's normalised covariates."""
        from morphgen.models.diffusion_training import train_diffusion

        if covariates is None:
            raise ConfigError(
                "model.family ldm conditions on covariates: fit_prior needs the covariate table"
            )
        if not latents or not val_latents:
            raise ConfigError(
                f"the prior needs training and held-out latents, got {len(latents)} and {len(val_latents)}"
            )
        names = list(self.covariate_columns)
        table = covariates.assign(**{ID: covariates[ID].astype(str)}).set_index(ID)
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise ConfigError(f"the covariate table lacks {missing} (columns: {list(table.columns)})")
        train_x, train_ids = load_latents(latents, "all")
        val_x, val_ids = load_latents(val_latents, "first")
        for subject in dict.fromkeys(train_ids + val_ids):
            if subject not in table.index:
                raise SubjectError(subject, None, "no covariates for this subject")
        subjects = list(dict.fromkeys(train_ids))
        scaler = CovariateScaler.fit(table.loc[subjects].reset_index(), names)
        per_subject = scaler.transform(table.loc[subjects].reset_index())
        train_c = scaler.transform(table.loc[train_ids].reset_index())
        val_c = scaler.transform(table.loc[val_ids].reset_index())
        extra = {"covariates": scaler.state_dict(), "training_covariates": torch.from_numpy(per_subject)}
        train_diffusion(
            train_x, train_c, val_x, val_c, self.diffusion_cfg, Path(out_dir), self.seed, extra, progress
        )

    # ---- generation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        model_path: Path,
        prior_path: Path,
        n_generate: int,
        n_keep: int,
        out_dir: Path,
        affine: np.ndarray,
        progress: bool = True,
    ) -> None:
        """Sample, decode, score and keep the best (see :meth:`ModelFamily.generate` for the files).

        ``scores.tsv`` also holds each sample's covariates. Resumable like the VQ-VAE family's generation
        (``checkpoints/generate.pt``); the kept samples' latents are decoded again at the end.
        """
        from morphgen.models.diffusion_training import load_diffusion

        n_generate, n_keep = checked_counts(n_generate, n_keep)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        autoencoder, disc, _ = load_autoencoder(Path(model_path))
        autoencoder, disc = autoencoder.to(device), disc.to(device)
        unet, saved = load_diffusion(prior_path, device)
        scale, latent_shape = float(saved["scale_factor"]), tuple(saved["latent_shape"])
        info = saved["info"]
        scaler = CovariateScaler.from_state_dict(info["covariates"])
        rows = info["training_covariates"].float()
        seed = int(self.sampling_cfg.get("seed", self.seed))
        draw = torch.randint(len(rows), (n_generate,), generator=torch_generator(seed, "covariates"))
        conditions = rows[draw]
        sampler = str(self.sampling_cfg.get("sampler", "ddim"))
        steps = self.sampling_cfg.get("steps", 50 if sampler == "ddim" else None)
        scheduler = make_scheduler(sampler, None if steps is None else int(steps))
        batch_size = int(self.sampling_cfg.get("batch_size", 8))
        counts = (n_generate, n_keep)
        resume = generation_checkpoint(
            out_dir, self.sampling_cfg, seed, device, counts, model_path, prior_path
        )
        generator = torch.Generator(device=device).manual_seed(seed)

        def decode(z: torch.Tensor) -> torch.Tensor:
            return autoencoder.decode(z.to(device) / scale).clamp(0.0, 1.0)

        best = resume.restore(generator) or BestSamples(n_keep)
        while best.count < n_generate:
            cov = conditions[best.count : best.count + batch_size].to(device)
            z = sample_latents(unet, scheduler, cov, latent_shape, generator, progress)
            for latent, score in zip(z.cpu(), discriminator_score(disc, decode(z)).tolist(), strict=True):
                best.add(score, latent.clone())
            if best.count < n_generate:
                resume.save_if_due(best, generator, of=n_generate)

        write_kept(
            best,
            decode,
            out_dir,
            affine,
            batch_size,
            "morphgen synthetic (latent diffusion)",
            columns=scaler.inverse(conditions.numpy()),
        )
        resume.finish()

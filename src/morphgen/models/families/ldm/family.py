"""Latent diffusion conditioned on covariates (Pinaya et al. 2022, seed 004).

* autoencoder: MONAI ``AutoencoderKL`` with the PatchGAN discriminator, trained, encoded and evaluated as
  every autoencoder family (``autoencoders.family``); latents are the encoder's means, float32
  (copies, channels, h, w, d);
* prior: a MONAI ``DiffusionModelUNet`` over latents scaled to unit variance, conditioned on the subjects'
  covariates (``model.conditioning.covariates``: age, sex, ventricular and brain volume by default),
  min-max normalised with the training subjects' ranges, which ``model.pt`` keeps
  (``morphgen.models.families.ldm.training``);
* generation: each sample is conditioned on the covariates of a training subject of the sub-population drawn
  at random, denoised by DDIM (``model.sampling.sampler``, ``steps``: seed 004 uses 50) or DDPM, decoded,
  clipped to [0, 1] and ranked by the mean PatchGAN output, as in the VQ-VAE family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from morphgen.errors import ConfigError, SubjectError
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.codecs import KLCodec
from morphgen.models.autoencoders.discriminator import discriminator_score
from morphgen.models.autoencoders.family import AutoencoderFamily
from morphgen.models.autoencoders.latents import read_latents
from morphgen.models.base import register_family
from morphgen.models.covariates import (
    ID,
    REQUEST_ID,
    VARY,
    CovariateScaler,
    covariate_columns,
    request_table,
)
from morphgen.models.engine.generation import generate_on_drawn_covariates, write_requests
from morphgen.models.families.ldm.diffusion import (
    FORMER_PROCESS,
    make_scheduler,
    sample_latents,
    sampling_covariates,
)
from morphgen.nifti import save_volume


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
        ``val_latents``. Files: those of :func:`morphgen.models.families.ldm.training.train_diffusion`; its
        ``model.pt`` also keeps the covariate ranges and each training subject's normalised covariates."""
        from morphgen.models.families.ldm.training import train_diffusion

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
    def _sampler(self, model_path: Path, prior_path: Path) -> _Sampler:
        from morphgen.models.families.ldm.training import load_diffusion

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        autoencoder, disc, _ = load_autoencoder(Path(model_path))
        unet, saved = load_diffusion(prior_path, device)
        sampler = str(self.sampling_cfg.get("sampler", "ddim"))
        steps = self.sampling_cfg.get("steps", 50 if sampler == "ddim" else None)
        info = saved["info"]
        process = saved.get("process", FORMER_PROCESS)  # files of before the process was kept
        guided = float(saved.get("condition_dropout", 0.0)) > 0
        guidance_scale = float(self.sampling_cfg.get("guidance_scale", 1.0))
        if guidance_scale != 1.0 and not guided:
            raise ConfigError(
                f"model.sampling.guidance_scale is {guidance_scale:g}, but {prior_path} was trained without "
                "model.diffusion.condition_dropout, so it has no unconditioned estimate to guide by: set "
                "guidance_scale to 1, or condition_dropout above 0 and train it again"
            )
        return _Sampler(
            autoencoder.to(device),
            disc.to(device),
            unet,
            make_scheduler(sampler, None if steps is None else int(steps), process),
            float(saved["scale_factor"]),
            tuple(saved["latent_shape"]),
            CovariateScaler.from_state_dict(info["covariates"]),
            info["training_covariates"].float(),
            device,
            guided,
            guidance_scale,
        )

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
        covariates: pd.DataFrame | None = None,
    ) -> None:
        """Sample, decode, score and keep the best (see :meth:`ModelFamily.generate` for the files).

        Each sample is conditioned on the covariates of one of ``covariates``' subjects (default: the prior's
        training subjects) drawn at random; ``scores.tsv`` also holds them. Resumable like the VQ-VAE family's
        generation (``checkpoints/generate.pt``); the kept samples' latents are decoded again at the end.
        """
        generate_on_drawn_covariates(
            self._sampler(model_path, prior_path),
            covariates,
            (n_generate, n_keep),
            self.sampling_cfg,
            self.seed,
            (model_path, prior_path),
            out_dir,
            affine,
            "morphgen synthetic (latent diffusion)",
            progress,
        )

    @torch.no_grad()
    def generate_conditioned(
        self,
        model_path: Path,
        prior_path: Path,
        requests: pd.DataFrame | None,
        grid: dict | None,
        out_dir: Path,
        affine: np.ndarray,
        progress: bool = True,
    ) -> pd.DataFrame:
        """One sample per requested row of covariates (:func:`morphgen.models.covariates.request_table`).

        Writes ``out_dir/<sample_id>.nii.gz`` per request and ``out_dir/requests.tsv``: sample_id, vary,
        file, score (the discriminator's, not used to select), each covariate as asked, its normalised value
        ``<covariate>_normalised`` (0 and 1: the training range) and ``outside_range`` (the covariates asked
        beyond their training range, comma-separated). The grid's samples all start from the same noise, so
        along a grid row only the varied covariate changes the image; each table row draws its own.
        """
        sampler = self._sampler(model_path, prior_path)
        asked = request_table(sampler.scaler, requests, grid)
        normalised = sampler.scaler.transform(asked)
        seed = int(self.sampling_cfg.get("seed", self.seed))
        generator = torch.Generator(device=sampler.device).manual_seed(seed)
        shared = torch.randn((1, *sampler.latent_shape), generator=generator, device=sampler.device)
        batch_size = int(self.sampling_cfg.get("batch_size", 8))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        scores = []
        for start in range(0, len(asked), batch_size):
            rows = asked.iloc[start : start + batch_size]
            cov = torch.from_numpy(normalised[start : start + batch_size])
            shape = (len(rows), *sampler.latent_shape)
            noise = torch.randn(shape, generator=generator, device=sampler.device)
            on_grid = torch.from_numpy(rows[VARY].ne("").to_numpy()).to(sampler.device)
            noise[on_grid] = shared
            z = sampler.draw(cov, generator, progress, noise)
            volumes = sampler.decode(z)
            scores += discriminator_score(sampler.disc, volumes).tolist()
            for sample_id, volume in zip(rows[REQUEST_ID], volumes.cpu().numpy(), strict=True):
                save_volume(
                    out_dir / f"{sample_id}.nii.gz",
                    volume[0],
                    affine,
                    description="morphgen synthetic (latent diffusion, conditioned)",
                )
        return write_requests(asked, normalised, sampler.scaler, scores, out_dir)


@dataclass
class _Sampler:
    """A trained model ready to sample: latents from covariates, decoded volumes, discriminator scores."""

    autoencoder: torch.nn.Module
    disc: torch.nn.Module
    unet: torch.nn.Module
    scheduler: object
    scale: float
    latent_shape: tuple[int, ...]
    scaler: CovariateScaler
    training: torch.Tensor  # each training subject's normalised covariates
    device: torch.device
    guided: bool = False  # trained with withheld covariates: takes guidance_input's covariates
    guidance_scale: float = 1.0

    def draw(
        self, cov: torch.Tensor, generator: torch.Generator, progress: bool, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        cov, unconditioned = sampling_covariates(cov.to(self.device), self.guided)
        return sample_latents(
            self.unet,
            self.scheduler,
            cov,
            self.latent_shape,
            generator,
            progress,
            noise,
            unconditioned,
            self.guidance_scale,
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z.to(self.device) / self.scale).clamp(0.0, 1.0)

    def score(self, z: torch.Tensor) -> torch.Tensor:
        return discriminator_score(self.disc, self.decode(z))

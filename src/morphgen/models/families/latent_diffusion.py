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
from morphgen.models.base import SCORES_TSV, sample_filename
from morphgen.models.checkpoint import load_autoencoder
from morphgen.models.codecs import KLCodec
from morphgen.models.covariates import DEFAULT_COVARIATES, ID, CovariateScaler
from morphgen.models.data import torch_generator
from morphgen.models.diffusion import make_scheduler, sample_latents
from morphgen.models.families.autoencoding import AutoencoderFamily
from morphgen.models.generation import GenerationCheckpoint
from morphgen.models.registry import register_family
from morphgen.models.selection import BestSamples
from morphgen.models.vqvae import discriminator_score
from morphgen.nifti import atomic_output, save_volume
from morphgen.weights import sha256sum


def load_latents(paths: list[Path], copies: str = "all") -> tuple[np.ndarray, list[str]]:
    """Latent means (N, channels, h, w, d) of every copy (``"all"``) or copy 0 (``"first"``) of each file,
    and the subject of each row (the file's name)."""
    arrays, subjects, shape = [], [], None
    for path in map(Path, paths):
        try:
            array = np.load(path)
        except Exception as exc:
            raise SubjectError(path.stem, path, f"latent file cannot be read ({exc})") from exc
        if array.ndim != 5 or not np.issubdtype(array.dtype, np.floating):
            raise SubjectError(
                path.stem, path, f"expected float latents (copies, c, h, w, d), got {array.shape}"
            )
        if shape is not None and array.shape[1:] != shape:
            raise SubjectError(path.stem, path, f"latent shape {array.shape[1:]} differs from {shape}")
        shape = array.shape[1:]
        chosen = array if copies == "all" else array[:1]
        arrays.append(chosen)
        subjects += [path.stem] * len(chosen)
    if not arrays:
        raise ConfigError("no latent files were given")
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
        conditioning = model_cfg.get("conditioning") or {}
        self.covariate_columns: dict[str, str] = dict(conditioning.get("covariates") or DEFAULT_COVARIATES)

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

        n_generate, n_keep = int(n_generate), int(n_keep)
        if n_generate < 1 or not 0 <= n_keep <= n_generate:
            raise ConfigError(
                f"generation needs 1 <= n_generate and 0 <= n_keep <= n_generate, got {n_generate}, {n_keep}"
            )
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
        out_dir = Path(out_dir)
        resume = GenerationCheckpoint(
            out_dir / "checkpoints" / "generate.pt",
            {
                "n_generate": n_generate,
                "n_keep": n_keep,
                "sampling": {k: v for k, v in self.sampling_cfg.items() if k != "checkpoint_minutes"},
                "seed": seed,
                "device": device.type,
                "autoencoder": sha256sum(model_path),
                "prior": sha256sum(prior_path),
            },
            minutes=float(self.sampling_cfg.get("checkpoint_minutes", 10)),
        )
        generator = torch.Generator(device=device).manual_seed(seed)
        best = resume.restore(generator) or BestSamples(n_keep)
        while best.count < n_generate:
            cov = conditions[best.count : best.count + batch_size].to(device)
            z = sample_latents(unet, scheduler, cov, latent_shape, generator, progress)
            images = autoencoder.decode(z / scale).clamp(0.0, 1.0)
            for latent, score in zip(z.cpu(), discriminator_score(disc, images).tolist(), strict=True):
                best.add(score, latent.clone())
            if best.count < n_generate:
                resume.save_if_due(best, generator, of=n_generate)

        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[int, str] = {}
        kept = best.kept()
        for start in range(0, len(kept), batch_size):
            chunk = kept[start : start + batch_size]
            z = torch.stack([latent for _, _, latent in chunk]).to(device)
            volumes = autoencoder.decode(z / scale).clamp(0.0, 1.0).cpu().numpy()
            for offset, ((index, _, _), volume) in enumerate(zip(chunk, volumes, strict=True)):
                name = sample_filename(start + offset)
                save_volume(
                    out_dir / name, volume[0], affine, description="morphgen synthetic (latent diffusion)"
                )
                files[index] = name
        table = pd.DataFrame(
            {
                "index": range(n_generate),
                "score": [f"{s:.9g}" for s in best.scores],
                "kept": [i in files for i in range(n_generate)],
                "file": [files.get(i, "") for i in range(n_generate)],
            }
        )
        requested = self._denormalised(scaler, conditions.numpy())
        table = pd.concat([table, requested], axis=1)
        with atomic_output(out_dir / SCORES_TSV) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.7g")
        resume.finish()

    @staticmethod
    def _denormalised(scaler: CovariateScaler, values: np.ndarray) -> pd.DataFrame:
        """Covariates in their own units from normalised values (a text covariate by its nearest level)."""
        lo, hi = np.asarray(scaler.minimum), np.asarray(scaler.maximum)
        raw = values * np.where(hi > lo, hi - lo, 1.0) + lo
        out = {}
        for i, name in enumerate(scaler.names):
            if name in scaler.levels:
                levels = scaler.levels[name]
                out[name] = [levels[int(np.clip(round(v), 0, len(levels) - 1))] for v in raw[:, i]]
            else:
                out[name] = raw[:, i]
        return pd.DataFrame(out)

"""Seed 001, the multiscale metamorphic VAE (M³AE), as a family.

* autoencoder: :class:`~.network.MetamorphicAutoencoder` (velocity fields and intensity maps applied coarse
  to fine to one template), trained by the shared autoencoder trainer with the codec's β-VAE and deformation
  terms (``codec``), AdamW as in the paper; latents are the encoder's means, float32 (copies, latent_dim);
* prior: a Gaussian with Ledoit-Wolf shrinkage fitted to the sub-population's encoded means (``gaussian``), or
  N(0, I) as in the paper (``model.latent_prior.sample_from: standard_normal``);
* generation: z is drawn, decoded and ranked by its log density under the sub-population's Gaussian (with
  ``model.sampling.oversample: 1`` every sample is kept, as in the paper). Each kept sample also gets the
  local volume of the sample relative to the template, from its deformation (``jacobian/<sample>.nii.gz``):
  a morphometry map no voxel decoder gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from morphgen.errors import ConfigError
from morphgen.fields import jacobian_determinant
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.family import AutoencoderFamily
from morphgen.models.autoencoders.latents import read_latents
from morphgen.models.base import LOSS_TSV, MODEL_FILE, register_family, sample_filename
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.models.engine.generation import checked_counts, generation_checkpoint, write_kept
from morphgen.models.engine.selection import BestSamples
from morphgen.models.families.m3ae.codec import MetamorphicCodec
from morphgen.models.families.m3ae.gaussian import Gaussian, ledoit_wolf, standard_normal
from morphgen.nifti import save_volume
from morphgen.tsv import write_tsv
from morphgen.weights import load_weights_only

PRIOR_FORMAT = "morphgen-gaussian-prior-1"
SAMPLE_FROM = ("subpopulation", "standard_normal")
JACOBIAN_DIR = "jacobian"


def load_means(paths: list[Path], copies: str = "all") -> np.ndarray:
    """Encoded means (N, latent_dim) of every copy (``"all"``) or copy 0 (``"first"``) of each file."""
    arrays, _ = read_latents(paths, copies, 2, np.floating, "float latent means (copies, latent_dim)")
    return np.concatenate(arrays).astype(np.float64)


def load_gaussian_prior(path: Path) -> tuple[Gaussian, dict]:
    blob = load_weights_only(path, "latent prior file")
    if blob.get("format") != PRIOR_FORMAT:
        raise ConfigError(f"{path} is not a morphgen Gaussian prior (format {blob.get('format')!r})")
    return Gaussian(blob["mean"].numpy(), blob["cov"].numpy()), blob


class GaussianLatentFamily(AutoencoderFamily):
    """A variational autoencoder with a Gaussian over each sub-population's encoded means, from
    ``config['model']``: autoencoder, latent_prior, sampling. Subclasses give the codec and may write more
    beside the model (:meth:`after_training`) and beside each sample (:meth:`sample_decoder`)."""

    def __init__(self, model_cfg: dict):
        super().__init__(model_cfg)
        for section in ("latent_prior", "sampling"):
            if not isinstance(model_cfg.get(section), dict):
                raise ConfigError(f"model.{section} is missing from the configuration (model.family: m3ae)")
        self.prior_cfg: dict = model_cfg["latent_prior"]
        self.sampling_cfg: dict = model_cfg["sampling"]
        self.sample_from = str(self.prior_cfg.get("sample_from", "subpopulation"))
        if self.sample_from not in SAMPLE_FROM:
            raise ConfigError(
                f"model.latent_prior.sample_from must be one of {', '.join(SAMPLE_FROM)}, "
                f"got {self.sample_from!r}"
            )

    def fit_autoencoder(self, train_images, val_images, out_dir, progress=True):
        super().fit_autoencoder(train_images, val_images, out_dir, progress)
        self.after_training(Path(out_dir), train_images)

    def finetune_autoencoder(self, pretrained, train_images, val_images, out_dir, settings, progress=True):
        super().finetune_autoencoder(pretrained, train_images, val_images, out_dir, settings, progress)
        self.after_training(Path(out_dir), train_images)

    def after_training(self, out_dir: Path, train_images: list[Path]) -> None:
        """Files written beside ``model.pt`` once it is trained (none here)."""

    def sample_decoder(self, model, device, out_dir: Path, affine: np.ndarray):
        """The decoder of kept samples: a batch of codes to images in [0, 1] (B, 1, ...), on the CPU; it may
        write maps of each sample, called on the kept samples in rank order."""

        @torch.no_grad()
        def decode(codes: torch.Tensor) -> torch.Tensor:
            return model.decode(codes.to(device)).clamp(0.0, 1.0).cpu()

        return decode

    # ---- prior ---------------------------------------------------------------------------------------------
    def fit_prior(
        self,
        latents: list[Path],
        val_latents: list[Path],
        out_dir: Path,
        progress: bool = True,
        covariates: pd.DataFrame | None = None,  # not conditioned: the sub-population is the condition
    ) -> None:
        """Fit the shrinkage Gaussian to every copy of ``latents``; score copy 0 of ``val_latents``.

        Writes ``model.pt`` (mean, covariance, shrinkage), ``loss.tsv`` (one row: the negative log-likelihood
        per dimension of the training and held-out means) and ``heldout.tsv`` (``model_nll_per_dim``, that of
        N(0, I), the paper's prior, as ``standard_normal_nll_per_dim``, and their ``ratio``)."""
        if not latents:
            raise ConfigError("fit_prior needs the latent files of at least one training subject")
        out_dir = Path(out_dir)
        train = load_means(latents)
        mean, cov, shrinkage = ledoit_wolf(train)
        fitted = Gaussian(mean, cov)
        val = load_means(val_latents, copies="first") if val_latents else np.empty((0, train.shape[1]))
        if val.shape[1] != train.shape[1]:
            raise ConfigError(
                f"held-out latents have {val.shape[1]} dimensions, training ones {train.shape[1]}"
            )
        save_atomic(
            {
                "format": PRIOR_FORMAT,
                "mean": torch.from_numpy(mean),
                "cov": torch.from_numpy(cov),
                "shrinkage": shrinkage,
                "n_latents": len(train),
            },
            out_dir / MODEL_FILE,
        )
        model_nll = fitted.nll_per_dim(val) if len(val) else float("nan")
        baseline = standard_normal(train.shape[1]).nll_per_dim(val) if len(val) else float("nan")
        row = {"epoch": 1, "train_nll_per_dim": fitted.nll_per_dim(train), "val_nll_per_dim": model_nll}
        write_tsv(pd.DataFrame([{**row, "shrinkage": shrinkage}]), out_dir / LOSS_TSV)
        heldout = {
            "model_nll_per_dim": model_nll,
            "standard_normal_nll_per_dim": baseline,
            "ratio": model_nll / baseline if len(val) else float("nan"),
            "val_latents": len(val),
        }
        write_tsv(pd.DataFrame([heldout]), out_dir / "heldout.tsv")

    # ---- generation ----------------------------------------------------------------------------------------
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
        """Draw z, decode, keep the ``n_keep`` most probable under the sub-population's Gaussian, write them
        (and what :meth:`sample_decoder` writes: M³AE's ``out_dir/jacobian/sample-0000.nii.gz`` ...).
        Resumable as every family's generation (``model.sampling.checkpoint_minutes``)."""
        n_generate, n_keep = checked_counts(n_generate, n_keep)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, _, network = load_autoencoder(Path(model_path))
        model = model.to(device)
        fitted, _ = load_gaussian_prior(Path(prior_path))
        if fitted.dim != int(network["latent_dim"]):
            raise ConfigError(
                f"the prior {prior_path} has {fitted.dim} dimensions, the autoencoder {model_path} "
                f"{network['latent_dim']}: not trained together?"
            )
        source = fitted if self.sample_from == "subpopulation" else standard_normal(fitted.dim)
        chol = torch.from_numpy(source.chol)
        mean = torch.from_numpy(source.mean)
        sampling = self.sampling_cfg
        batch_size = int(sampling.get("batch_size", 8))
        seed = int(sampling.get("seed", self.seed))
        settings = {**sampling, "sample_from": self.sample_from}
        counts = (n_generate, n_keep)
        resume = generation_checkpoint(out_dir, settings, seed, device, counts, model_path, prior_path)
        generator = torch.Generator().manual_seed(seed)  # on CPU: the same draws on any device
        best = resume.restore(generator) or BestSamples(n_keep)
        out_dir = Path(out_dir)
        from tqdm import tqdm

        with tqdm(total=n_generate, initial=best.count, desc="samples", disable=not progress) as bar:
            while best.count < n_generate:
                size = min(batch_size, n_generate - best.count)
                noise = torch.randn((size, fitted.dim), generator=generator, dtype=torch.float64)
                z = mean + noise @ chol.T
                for code, score in zip(z, fitted.log_density(z.numpy()), strict=True):
                    best.add(float(score) / fitted.dim, code.float().clone())
                bar.update(size)
                if best.count < n_generate:
                    resume.save_if_due(best, generator, of=n_generate)

        decode = self.sample_decoder(model, device, out_dir, affine)
        write_kept(best, decode, out_dir, affine, batch_size, f"morphgen synthetic ({self.name})")
        resume.finish()


@register_family("m3ae")
class MetamorphicFamily(GaussianLatentFamily):
    """Seed 001's model: the metamorphic autoencoder; its template is written beside ``model.pt`` and each
    sample's volume relative to the template beside the sample."""

    codec_class = MetamorphicCodec

    def after_training(self, out_dir: Path, train_images: list[Path]) -> None:
        """``template.nii.gz`` beside model.pt: the image every sample is a deformation of."""
        import nibabel as nib

        model, _, _ = load_autoencoder(out_dir / MODEL_FILE)
        affine = nib.load(str(train_images[0])).affine
        save_volume(
            out_dir / "template.nii.gz",
            model.template[0, 0].numpy(),
            affine,
            description="morphgen M3AE template",
        )

    def sample_decoder(self, model, device, out_dir: Path, affine: np.ndarray):
        written = [0]

        @torch.no_grad()
        def decode(codes: torch.Tensor) -> torch.Tensor:
            images, parts = model.decode(codes.to(device), parts=True)
            ddf = model.deformation(parts["ddfs"]).cpu().numpy()
            for displacement in ddf:
                # the sample draws the template at x + u(x): its volume relative to the template is 1 / det
                relative = 1.0 / np.clip(jacobian_determinant(displacement), 1e-6, None)
                save_volume(
                    out_dir / JACOBIAN_DIR / sample_filename(written[0]),
                    relative.astype(np.float32),
                    affine,
                    description="morphgen M3AE sample volume / template volume",
                )
                written[0] += 1
            return images.clamp(0.0, 1.0).cpu()

        return decode

"""Seed 002, BrainSynth (Peng et al.): split residual VQ, a GLM split of the quantised latent, a masked
diffusion prior.

* autoencoder: the ``rvq`` codec (``brainsynth.codec``) on the shared trainer; latents are int16 code indices
  (copies, splits, depth, h, w, d);
* prior: the quantised latents Q of the training subjects are split by a least-squares GLM into a metadata
  part P m (m: the z-scored covariates of ``model.conditioning.covariates``, seed 002: age and sex) and a
  residual r = Q - P m, which the autoencoder's own quantiser codes again: the R-code. The masked prior
  (``brainsynth.prior``) learns the R-codes in sub-codes along the first image axis. It never sees the
  covariates: they act only through P m. ``glm.tsv`` keeps how much the split costs;
* generation: an R-code is sampled, Q(r) + P m formed for the covariates of a subject drawn at random (as the
  LDM family does), decoded, clipped to [0, 1] and ranked by the mean PatchGAN output. Requested covariates
  (``generate_conditioned``): every grid row shares one R-code, so along a row only P m changes — a clean
  counterfactual.

``fit_prior`` needs the autoencoder: its codebook forms Q and codes r (the catalogue's
``prior_reads_autoencoder``, which gives the train_prior rule the autoencoder as an input).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from morphgen.errors import ConfigError, SubjectError
from morphgen.models.autoencoders.checkpoint import load_autoencoder
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
from morphgen.models.families.brainsynth.codec import ResidualVQCodec
from morphgen.models.families.brainsynth.glm import StreamingGLM
from morphgen.models.families.brainsynth.prior import load_masked_prior, sample_sequences, train_masked_prior
from morphgen.nifti import save_volume
from morphgen.tsv import write_tsv

GLM_TSV = "glm.tsv"
DEFAULT_COVARIATES = {"age": "age", "sex": "sex"}  # seed 002


def codes_to_tokens(indices: torch.Tensor) -> torch.Tensor:
    """Code indices (N, splits, depth, h, w, d) as sequences (N, h*w*d*splits*depth): position-major, so a
    run of whole slices along the first image axis is a contiguous run of tokens (a sub-code)."""
    return indices.permute(0, 3, 4, 5, 1, 2).reshape(len(indices), -1)


def tokens_to_codes(tokens: torch.Tensor, code_shape: tuple[int, ...]) -> torch.Tensor:
    splits, depth, h, w, d = code_shape
    return tokens.reshape(len(tokens), h, w, d, splits, depth).permute(0, 4, 5, 1, 2, 3)


def _batched(fn, x: torch.Tensor, size: int = 8) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


@register_family("brainsynth")
class BrainSynthFamily(AutoencoderFamily):
    """Seed 002's model from ``config['model']``: autoencoder (rvq), prior, conditioning, sampling."""

    codec_class = ResidualVQCodec
    conditioned = True

    def __init__(self, model_cfg: dict):
        super().__init__(model_cfg)
        for section in ("prior", "sampling"):
            if not isinstance(model_cfg.get(section), dict):
                raise ConfigError(
                    f"model.{section} is missing from the configuration (model.family: brainsynth)"
                )
        self.prior_cfg: dict = model_cfg["prior"]
        self.sampling_cfg: dict = model_cfg["sampling"]
        conditioning = model_cfg.get("conditioning") or {}
        self.covariate_columns = covariate_columns(
            conditioning if conditioning.get("covariates") else {"covariates": DEFAULT_COVARIATES}
        )

    # ---- prior ---------------------------------------------------------------------------------------------
    def fit_prior(
        self,
        latents: list[Path],
        val_latents: list[Path],
        out_dir: Path,
        progress: bool = True,
        covariates: pd.DataFrame | None = None,
        model_path: Path | None = None,
    ) -> None:
        """The GLM over the training subjects' quantised latents, their R-codes, and the masked prior on every
        copy of them (validated on copy 0 of ``val_latents``). Files: those of
        :func:`~morphgen.models.families.brainsynth.prior.train_masked_prior`, whose ``model.pt`` also keeps
        the GLM and the covariate ranges, and ``glm.tsv`` (one row per split: subjects,
        ``requantisation_error`` = |Q(r) - r| / |r|, ``metadata_fraction`` = |P m|² / |Q|², ``psnr_db`` of
        decoding Q(r) + P m against decoding Q)."""
        if model_path is None:
            raise ConfigError(
                "model.family brainsynth: fit_prior needs the autoencoder (model_path), whose codebook forms "
                "the quantised latents and codes their residuals"
            )
        if covariates is None:
            raise ConfigError("model.family brainsynth conditions on covariates: fit_prior needs their table")
        if not latents or not val_latents:
            raise ConfigError(
                f"the prior needs training and held-out latents, got {len(latents)} and {len(val_latents)}"
            )
        names = list(self.covariate_columns)
        table = covariates.assign(**{ID: covariates[ID].astype(str)}).set_index(ID)
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise ConfigError(f"the covariate table lacks {missing} (columns: {list(table.columns)})")
        described = "code indices (copies, splits, depth, h, w, d)"
        train_arrays, train_ids = read_latents(latents, "all", 6, np.integer, described)
        val_arrays, val_ids = read_latents(val_latents, "first", 6, np.integer, described)
        for subject in dict.fromkeys(train_ids + val_ids):
            if subject not in table.index:
                raise SubjectError(subject, None, "no covariates for this subject")
        subjects = list(dict.fromkeys(train_ids))
        scaler = CovariateScaler.fit(table.loc[subjects].reset_index(), names)
        train_c = torch.from_numpy(scaler.transform(table.loc[train_ids].reset_index()))
        val_c = torch.from_numpy(scaler.transform(table.loc[val_ids].reset_index()))

        autoencoder, _, network = load_autoencoder(Path(model_path))
        if network.get("kind") != ResidualVQCodec.kind:
            raise ConfigError(
                f"{model_path} is a {network.get('kind')!r} autoencoder; model.family brainsynth needs the "
                f"{ResidualVQCodec.kind!r} one it trains"
            )
        quantizer = autoencoder.quantizer
        train_codes = torch.from_numpy(np.concatenate(train_arrays).astype(np.int64))
        val_codes = torch.from_numpy(np.concatenate(val_arrays).astype(np.int64))
        code_shape = tuple(train_codes.shape[1:])
        if tuple(val_codes.shape[1:]) != code_shape:
            raise ConfigError(
                f"validation codes have shape {tuple(val_codes.shape[1:])}, training {code_shape}"
            )
        subcodes = int(self.prior_cfg.get("subcodes", 3))
        if subcodes < 1 or code_shape[2] % subcodes:
            raise ConfigError(
                f"model.prior.subcodes: the latent's first axis ({code_shape[2]}) does not cut into "
                f"{subcodes} equal slabs"
            )
        with torch.no_grad():
            q_train = _batched(quantizer.lookup, train_codes)
            q_val = _batched(quantizer.lookup, val_codes)
            latent_shape = tuple(q_train.shape[1:])
            glm = StreamingGLM(len(names), int(np.prod(latent_shape)))
            glm.add(train_c, q_train)
            try:
                glm.solve()
            except ValueError as exc:
                raise ConfigError(f"model.conditioning.covariates {names}: {exc}") from None
            r_train, r_val = glm.residual(train_c, q_train), glm.residual(val_c, q_val)
            rcode_train = _batched(quantizer.quantize, r_train)
            rcode_val = _batched(quantizer.quantize, r_val)
            first = [train_ids.index(s) for s in subjects]  # copy 0 of each training subject
            rows = []
            for split, q, r, rcode, c in (
                ("train", q_train[first], r_train[first], rcode_train[first], train_c[first]),
                ("test", q_val, r_val, rcode_val, val_c),
            ):
                qr = _batched(quantizer.lookup, rcode)
                metadata = glm.metadata_part(c, latent_shape)
                recon = _batched(autoencoder.decoder, q).clamp(0, 1)
                split_recon = _batched(autoencoder.decoder, qr + metadata).clamp(0, 1)
                rows.append(
                    {
                        "split": split,
                        "subjects": len(q),
                        "requantisation_error": float((qr - r).norm() / r.norm().clamp_min(1e-12)),
                        "metadata_fraction": float(metadata.pow(2).sum() / q.pow(2).sum().clamp_min(1e-12)),
                        "psnr_db": _psnr(split_recon, recon),
                    }
                )
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_tsv(pd.DataFrame(rows), out_dir / GLM_TSV)
        per_subject = scaler.transform(table.loc[subjects].reset_index())
        extra = {
            "glm": glm.state_dict(),
            "covariates": scaler.state_dict(),
            "training_covariates": torch.from_numpy(per_subject),
            "code_shape": list(code_shape),
            "latent_shape": list(latent_shape),
        }
        train_masked_prior(
            codes_to_tokens(rcode_train).numpy(),
            codes_to_tokens(rcode_val).numpy(),
            quantizer.num_embeddings,
            self.prior_cfg,
            out_dir,
            self.seed,
            extra,
            progress,
        )

    # ---- generation ----------------------------------------------------------------------------------------
    def _sampler(self, model_path: Path, prior_path: Path) -> _Sampler:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        autoencoder, disc, network = load_autoencoder(Path(model_path))
        prior, saved = load_masked_prior(prior_path, device)
        info = saved["info"]
        code_shape = tuple(int(v) for v in info["code_shape"])
        if (
            network.get("kind") != ResidualVQCodec.kind
            or prior.vocabulary != autoencoder.quantizer.num_embeddings
        ):
            raise ConfigError(f"the prior {prior_path} was not trained on the codes of {model_path}")
        glm = StreamingGLM(1, 1)
        glm.load_state_dict(info["glm"])
        return _Sampler(
            autoencoder.to(device),
            disc.to(device),
            prior,
            glm,
            CovariateScaler.from_state_dict(info["covariates"]),
            info["training_covariates"].float(),
            code_shape,
            tuple(int(v) for v in info["latent_shape"]),
            float(self.sampling_cfg.get("temperature", 1.0)),
            device,
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
        """Sample, decode, score and keep the best (see :meth:`ModelFamily.generate` for the files); each
        sample takes the covariates of one of ``covariates``' subjects (default: the prior's training
        subjects) drawn at random, which ``scores.tsv`` also holds; resumable (``checkpoints/generate.pt``).
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
            "morphgen synthetic (BrainSynth)",
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
        """One sample per requested row of covariates; the files and columns of the LDM family's, and
        ``rcode`` (a digest of the sample's R-code): every grid row shares one, each table row draws its
        own."""
        sampler = self._sampler(model_path, prior_path)
        asked = request_table(sampler.scaler, requests, grid)
        normalised = torch.from_numpy(sampler.scaler.transform(asked))
        seed = int(self.sampling_cfg.get("seed", self.seed))
        generator = torch.Generator(device=sampler.device).manual_seed(seed)
        shared = sampler.rcodes(1, generator)
        batch_size = int(self.sampling_cfg.get("batch_size", 8))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        scores, digests = [], []
        for start in tqdm(range(0, len(asked), batch_size), desc="requested samples", disable=not progress):
            rows = asked.iloc[start : start + batch_size]
            rcodes = sampler.rcodes(len(rows), generator)
            on_grid = torch.from_numpy(rows[VARY].ne("").to_numpy()).to(sampler.device)
            rcodes[on_grid] = shared
            volumes = sampler.decode(sampler.latents(rcodes, normalised[start : start + batch_size]))
            scores += discriminator_score(sampler.disc, volumes).tolist()
            digests += [hashlib.sha256(r.cpu().numpy().tobytes()).hexdigest()[:16] for r in rcodes]
            for sample_id, volume in zip(rows[REQUEST_ID], volumes.cpu().numpy(), strict=True):
                save_volume(
                    out_dir / f"{sample_id}.nii.gz",
                    volume[0],
                    affine,
                    description="morphgen synthetic (BrainSynth, conditioned)",
                )
        return write_requests(asked, normalised.numpy(), sampler.scaler, scores, out_dir, rcode=digests)


@dataclass
class _Sampler:
    """A trained model ready to sample: R-codes, latents Q(r) + P m, decoded volumes, discriminator scores."""

    autoencoder: torch.nn.Module
    disc: torch.nn.Module
    prior: torch.nn.Module
    glm: StreamingGLM
    scaler: CovariateScaler
    training: torch.Tensor  # each training subject's normalised covariates
    code_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    temperature: float
    device: torch.device

    def rcodes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_sequences(self.prior, n, generator, self.temperature, self.device)

    def latents(self, rcodes: torch.Tensor, covariates: torch.Tensor) -> torch.Tensor:
        """Q(r) + P m (n, C, h, w, d) of R-code sequences (n, L) and normalised covariates (n, k)."""
        residual = self.autoencoder.quantizer.lookup(tokens_to_codes(rcodes.to(self.device), self.code_shape))
        metadata = self.glm.metadata_part(covariates.cpu(), self.latent_shape).to(self.device)
        return residual + metadata

    def draw(self, covariates: torch.Tensor, generator: torch.Generator, progress: bool) -> torch.Tensor:
        """Latents of sampled R-codes for these covariates."""
        return self.latents(self.rcodes(len(covariates), generator), covariates)

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decoder(q.to(self.device)).clamp(0.0, 1.0)

    def score(self, q: torch.Tensor) -> torch.Tensor:
        return discriminator_score(self.disc, self.decode(q))

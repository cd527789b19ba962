"""VQ-VAE + transformer prior (Tudosiu et al. 2022): the paper's model family.

* autoencoder: MONAI VQVAE with EMA codebook and a PatchGAN discriminator (``autoencoders.vqvae``),
  trained, encoded and evaluated as every autoencoder family (``autoencoders.family``);
* latents: token grids (copies, h, w, d), int16 for codebooks up to 32768 entries;
* prior: a causal transformer over the C-order flattened tokens (``prior``);
* generation: sampled tokens are decoded, clipped to [0, 1] and ranked by the mean PatchGAN output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.codecs import VQCodec
from morphgen.models.autoencoders.discriminator import discriminator_score
from morphgen.models.autoencoders.family import AutoencoderFamily
from morphgen.models.autoencoders.latents import load_token_sequences
from morphgen.models.autoencoders.vqvae import codebook_size_of, decode_tokens
from morphgen.models.base import HELDOUT_TSV, register_family
from morphgen.models.engine.generation import checked_counts, generation_checkpoint, write_kept
from morphgen.models.engine.positions import ConstantPositions
from morphgen.models.engine.selection import BestSamples
from morphgen.tsv import read_tsv, write_tsv


@register_family("vqvae_transformer")
class VQVAETransformerFamily(AutoencoderFamily):
    """The paper's two-stage model, configured by ``config['model']`` (autoencoder, prior, sampling).

    The autoencoder's methods (training, fine-tuning, encoding to int16 token grids, reconstruction) are
    :class:`AutoencoderFamily`'s with the VQ-VAE codec; loss.tsv also counts the codebook entries used and
    restarted per epoch (``model.autoencoder.dead_code_threshold``).
    """

    codec_class = VQCodec
    token_grid_dims = 3  # a latent file holds (copies, h, w, d) token grids
    sample_description = "morphgen synthetic (VQ-VAE + transformer)"

    def __init__(self, model_cfg: dict):
        super().__init__(model_cfg)
        for section in ("prior", "sampling"):
            if not isinstance(model_cfg.get(section), dict):
                raise ConfigError(f"model.{section} is missing from the configuration")
        self.prior_cfg: dict = model_cfg["prior"]
        self.sampling_cfg: dict = model_cfg["sampling"]

    # ---- what a subclass with other tokens changes -------------------------------------------------------
    def vocabulary(self) -> int:
        """Token values the autoencoder of ``model.autoencoder`` gives: the prior's vocabulary."""
        return codebook_size_of(self.ae_cfg)

    def code_shape(self, network: dict) -> tuple[int, ...]:
        """The shape of one image's tokens, as :meth:`decode_codes` takes them."""
        return tuple(network["latent_shape"])

    def token_ranges(self, network: dict) -> np.ndarray | None:
        """Each position's allowed ``[low, high)`` token values, where they are not the whole vocabulary."""
        return None

    def decode_codes(self, model: torch.nn.Module, network: dict, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, X, Y, Z) in [0, 1] from a batch of tokens of :meth:`code_shape`."""
        return decode_tokens(model, codes).clamp(0.0, 1.0)

    def prior_kind(self) -> str:
        """``model.prior.kind``: ``autoregressive`` (seed 000's causal transformer) or ``masked`` (seed 002's
        absorbing diffusion over the same tokens, ``brainsynth.prior``)."""
        kind = str(self.prior_cfg.get("kind", "autoregressive"))
        if kind not in ("autoregressive", "masked"):
            raise ConfigError(f"model.prior.kind: {kind!r}; expected autoregressive or masked")
        if kind == "masked" and type(self).token_ranges is not VQVAETransformerFamily.token_ranges:
            raise ConfigError(
                f"model.prior.kind: masked draws every position from the whole vocabulary; model family "
                f"{self.name!r} restricts positions to their own codebooks: use kind autoregressive"
            )
        return kind

    # ---- prior ---------------------------------------------------------------------------------------------
    def fit_prior(
        self,
        latents: list[Path],
        val_latents: list[Path],
        out_dir: Path,
        progress: bool = True,
        covariates=None,  # not conditioned: the sub-population is the condition
    ) -> None:
        """Train the transformer on every copy of ``latents``; validate on copy 0 of ``val_latents``.

        Files are those of :func:`.prior.train_prior` (model.pt, checkpoints/last.pt, loss.tsv,
        heldout.tsv).
        """
        from morphgen.models.families.vqvae_transformer.prior import train_prior

        codebook_size = self.vocabulary()
        if not latents or not val_latents:
            raise ConfigError(
                f"the prior needs training and held-out latents, got {len(latents)} and {len(val_latents)}"
            )
        train_tokens = load_token_sequences(latents, copies="all", grid_dims=self.token_grid_dims)
        val_tokens = load_token_sequences(val_latents, copies="first", grid_dims=self.token_grid_dims)
        for name, tokens in (("training", train_tokens), ("validation", val_tokens)):
            if tokens.min() < 0 or tokens.max() >= codebook_size:
                raise ConfigError(
                    f"{name} latents hold token indices outside model.autoencoder.codebook_size="
                    f"{codebook_size}; were they encoded with another autoencoder?"
                )
        if val_tokens.shape[1] != train_tokens.shape[1]:
            raise ConfigError(
                f"validation latents have {val_tokens.shape[1]} tokens, "
                f"training latents {train_tokens.shape[1]}"
            )
        masked = self.prior_kind() == "masked"
        positions = self.constant_positions(
            train_tokens, int(self.prior_cfg.get("subcodes", 3)) if masked else 1
        )
        extra = {"positions": positions.state()}
        train_tokens, reduced_val = positions.reduce(train_tokens), positions.reduce(val_tokens)
        out_dir = Path(out_dir)
        if masked:
            from morphgen.models.families.brainsynth.prior import train_masked_prior

            cfg = {k: v for k, v in self.prior_cfg.items() if k not in ("kind", "constant_positions")}
            train_masked_prior(
                train_tokens, reduced_val, codebook_size, cfg, out_dir, self.seed, extra, progress
            )
        else:
            cfg = {k: v for k, v in self.prior_cfg.items() if k != "constant_positions"}
            train_prior(
                train_tokens, reduced_val, codebook_size, cfg, out_dir, self.seed, progress, extra=extra
            )
        heldout = read_tsv(out_dir / HELDOUT_TSV)
        heldout["positions"] = positions.length
        heldout["modelled_positions"] = positions.kept
        heldout["constant_mismatch"] = positions.mismatch(val_tokens)
        write_tsv(heldout, out_dir / HELDOUT_TSV)

    def constant_positions(self, train_tokens: np.ndarray, multiple: int = 1) -> ConstantPositions:
        """The positions the prior learns (``model.prior.constant_positions``): ``drop`` leaves out those
        with one token in every training sequence; ``model`` learns every position, as the paper."""
        mode = str(self.prior_cfg.get("constant_positions", "drop"))
        if mode not in ("drop", "model"):
            raise ConfigError(f"model.prior.constant_positions: {mode!r}; expected drop or model")
        if mode == "model":
            return ConstantPositions.none(train_tokens.shape[1])
        return ConstantPositions.of(train_tokens, multiple)

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
        covariates: pd.DataFrame | None = None,
    ) -> None:
        """Sample, decode, score and keep the best (see :meth:`ModelFamily.generate` for the files).

        Uses ``model.sampling`` (batch_size, temperature, top_k, precision, seed: default model.seed,
        checkpoint_minutes), on the GPU when there is one. The score is the mean raw PatchGAN output
        (least-squares GAN: about 1 for real-looking, 0 for fake-looking); ties keep the earlier sample.
        Memory holds the tokens of ``n_keep`` samples and one batch of volumes; the kept samples are decoded
        again at the end. Every ``checkpoint_minutes`` and on a stop signal (``engine.preemption``) the
        scores, kept tokens and sampler state go to ``out_dir/checkpoints/generate.pt``; a rerun with the same
        models and settings resumes there and writes what an uninterrupted run writes.
        """
        from morphgen.models.families.vqvae_transformer.prior import load_prior, sample_tokens

        n_generate, n_keep = checked_counts(n_generate, n_keep)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        vqvae, disc, network = load_autoencoder(Path(model_path))
        vqvae, disc = vqvae.to(device), disc.to(device)
        masked = self.prior_kind() == "masked"
        latent = self.code_shape(network)
        length = int(np.prod(latent))
        codebook_size = int(network["codebook_size"])
        sampling = self.sampling_cfg
        batch_size = int(sampling.get("batch_size", 8))
        seed = int(sampling.get("seed", self.seed))
        counts = (n_generate, n_keep)
        resume = generation_checkpoint(out_dir, sampling, seed, device, counts, model_path, prior_path)
        generator = torch.Generator(device=device).manual_seed(seed)

        def decode(codes: torch.Tensor) -> torch.Tensor:
            return self.decode_codes(vqvae, network, codes.to(device))

        best = resume.restore(generator) or BestSamples(n_keep)
        temperature = float(sampling.get("temperature", 1.0))
        positions = prior_positions(Path(prior_path), length)
        ranges = self.token_ranges(network)
        if masked:
            batches = _masked_batches(
                prior_path, n_generate - best.count, batch_size, temperature, generator, device, progress
            )
        else:
            batches = sample_tokens(
                load_prior(Path(prior_path), device),
                n=n_generate - best.count,
                batch_size=batch_size,
                temperature=temperature,
                top_k=sampling.get("top_k"),
                progress=progress,
                precision=str(sampling.get("precision", "fp32")),
                generator=generator,
                token_ranges=None if ranges is None else ranges[positions.varying],
            )
        for tokens in batches:
            tokens = np.asarray(tokens)[: n_generate - best.count]
            if tokens.ndim == 2 and tokens.shape[1] == positions.kept:
                tokens = positions.expand(tokens)
            if tokens.ndim != 2 or tokens.shape[1] != length:
                raise ConfigError(
                    f"the prior {prior_path} samples sequences of shape {tokens.shape[1:]}, but the "
                    f"autoencoder {model_path} decodes {length} tokens {latent}: not trained together?"
                )
            if tokens.min() < 0 or tokens.max() >= codebook_size:
                raise ConfigError(
                    f"the prior {prior_path} sampled tokens outside the codebook of {model_path}"
                )
            codes = torch.from_numpy(tokens.reshape((-1, *latent)))
            for code, score in zip(codes, discriminator_score(disc, decode(codes)).tolist(), strict=True):
                best.add(score, code.clone())
            if best.count >= n_generate:
                break
            resume.save_if_due(best, generator, of=n_generate)
        if best.count < n_generate:
            raise RuntimeError(f"the prior produced {best.count} samples, {n_generate} were asked for")

        write_kept(best, decode, out_dir, affine, batch_size, self.sample_description)
        resume.finish()


def prior_positions(prior_path: Path, length: int) -> ConstantPositions:
    """The positions the prior of ``prior_path`` learnt, of ``length`` tokens (all of them for a prior file
    that kept none)."""
    from morphgen.weights import load_weights_only

    info = load_weights_only(prior_path, "prior model file").get("info") or {}
    try:
        return ConstantPositions.from_state(info.get("positions"), length)
    except ValueError as exc:
        raise ConfigError(f"{prior_path}: {exc}: not trained together?") from None


def _masked_batches(prior_path, n, batch_size, temperature, generator, device, progress):
    """Token sequences (batch, L) of a masked prior, ``batch_size`` at a time until ``n``."""
    from tqdm import tqdm

    from morphgen.models.families.brainsynth.prior import load_masked_prior, sample_sequences

    model, _ = load_masked_prior(Path(prior_path), device)
    with tqdm(total=n, desc="masked prior samples", disable=not progress) as bar:
        while n > 0:
            size = min(batch_size, n)
            yield sample_sequences(model, size, generator, temperature, device).cpu().numpy()
            bar.update(size)
            n -= size

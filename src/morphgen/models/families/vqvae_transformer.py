"""VQ-VAE + transformer prior (Tudosiu et al. 2022): the paper's model family.

* autoencoder: MONAI VQVAE with EMA codebook and a PatchGAN discriminator (``morphgen.models.vqvae``),
  trained by ``morphgen.models.autoencoder_training``; ``model.pt`` holds both networks and their config;
* latents: token grids (copies, h, w, d), int16 for codebooks up to 32768 entries;
* prior: a causal transformer over the C-order flattened tokens (``morphgen.models.prior``);
* generation: sampled tokens are decoded, clipped to [0, 1] and ranked by the mean PatchGAN output.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from morphgen.errors import ConfigError
from morphgen.models.autoencoder_training import train_autoencoder
from morphgen.models.base import SCORES_TSV, ModelFamily, sample_filename
from morphgen.models.checkpoint import load_autoencoder
from morphgen.models.data import VolumeAugmentation, VolumeDataset
from morphgen.models.distributed import distributed_settings
from morphgen.models.generation import GenerationCheckpoint
from morphgen.models.latents import decode_tokens, encode_subjects, load_token_sequences
from morphgen.models.registry import register_family
from morphgen.models.selection import BestSamples
from morphgen.models.vqvae import discriminator_score
from morphgen.nifti import atomic_output, save_volume
from morphgen.weights import sha256sum

# MS-SSIM kernel used when the grid allows it (the largest odd size that MONAI accepts is used otherwise).
MSSSIM_KERNEL = 7


def msssim_kernel_size(shape: tuple[int, ...], preferred: int = MSSSIM_KERNEL) -> int:
    """Largest odd kernel <= ``preferred`` for MONAI's 5-scale MS-SSIM: every side // 16 must exceed k - 1.

    MONAI also halves the image once per scale (five times), so every side must be at least 32 voxels.
    """
    if min(shape) < 32:
        raise ConfigError(
            f"MS-SSIM needs every side of the grid to be at least 32 voxels, got {tuple(shape)}"
        )
    limit = min(shape) // 16
    k = min(preferred, limit)
    return k if k % 2 == 1 else k - 1


@register_family("vqvae_transformer")
class VQVAETransformerFamily(ModelFamily):
    """The paper's two-stage model, configured by ``config['model']`` (autoencoder, prior, sampling)."""

    def __init__(self, model_cfg: dict):
        super().__init__(model_cfg)
        for section in ("autoencoder", "prior", "sampling"):
            if not isinstance(model_cfg.get(section), dict):
                raise ConfigError(f"model.{section} is missing from the configuration")
        self.ae_cfg: dict = model_cfg["autoencoder"]
        self.prior_cfg: dict = model_cfg["prior"]
        self.sampling_cfg: dict = model_cfg["sampling"]
        self.seed = int(model_cfg.get("seed", 0))
        _, self.lr_scaling = distributed_settings(model_cfg)

    # ---- autoencoder ---------------------------------------------------------------------------------------
    def fit_autoencoder(
        self, train_images: list[Path], val_images: list[Path], out_dir: Path, progress: bool = True
    ) -> None:
        """Train the VQ-VAE and discriminator (see :meth:`ModelFamily.fit_autoencoder` for the files).

        ``model.pt`` is a dict: format, network (plain-dict config incl. image_shape and latent_shape),
        autoencoder and discriminator state dicts, info (epochs, steps, seed, n_train). loss.tsv also counts
        the codebook entries used and restarted per epoch (``model.autoencoder.dead_code_threshold``).
        """
        train_autoencoder(
            train_images,
            val_images,
            self.ae_cfg,
            Path(out_dir),
            self.seed,
            progress=progress,
            lr_scaling=self.lr_scaling,
        )

    def finetune_autoencoder(
        self,
        pretrained: Path,
        train_images: list[Path],
        val_images: list[Path],
        out_dir: Path,
        settings: dict,
        progress: bool = True,
    ) -> None:
        """Fine-tune as in the paper (§3.2): ``settings`` override the optimisation settings (``epochs``,
        ``lr``, ``patience`` ...); the trainer refuses a network that differs from the pre-trained one."""
        cfg = {**self.ae_cfg, **settings}
        train_autoencoder(
            train_images,
            val_images,
            cfg,
            Path(out_dir),
            self.seed,
            progress=progress,
            init_from=Path(pretrained),
            lr_scaling=self.lr_scaling,
        )

    def encode(
        self,
        model_path: Path,
        images: dict[str, Path],
        out_dir: Path,
        augmented_copies: int,
        progress: bool = True,
    ) -> None:
        """Write ``out_dir/<subject>.npy``: int16 (int32 for codebooks > 32768) tokens (1 + copies, h, w, d).

        Copy 0 is the unaugmented volume; copies 1.. use ``model.autoencoder.augment`` with a generator
        seeded by (model.seed, subject, copy).
        """
        if int(augmented_copies) < 0:
            raise ConfigError(f"model.latents.augmented_copies must be >= 0, got {augmented_copies}")
        vqvae, _, _ = load_autoencoder(Path(model_path))
        augment = VolumeAugmentation(self.ae_cfg.get("augment"))
        encode_subjects(
            vqvae,
            images,
            Path(out_dir),
            int(augmented_copies),
            augment,
            seed=self.seed,
            batch_size=int(self.ae_cfg.get("batch_size", 4)),
            progress=progress,
        )

    @torch.no_grad()
    def evaluate_reconstruction(
        self,
        model_path: Path,
        images: dict[str, Path],
        out_tsv: Path,
        out_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        """Write ``out_tsv`` (subject, mae, psnr, msssim; last row ``mean``) of reconstructions in [0, 1].

        PSNR uses a data range of 1; MS-SSIM is MONAI's 5-scale metric with a Gaussian kernel of the largest
        odd size <= 7 that the grid allows (3 on 48 x 64 x 48). With ``out_dir``, reconstructions are written
        as ``out_dir/<subject>.nii.gz`` with the input's affine.
        """
        from monai.metrics import MultiScaleSSIMMetric

        vqvae, _, _ = load_autoencoder(Path(model_path))
        subjects = list(images)
        data = VolumeDataset([images[s] for s in subjects], subjects, cache=False)
        metric = MultiScaleSSIMMetric(
            spatial_dims=3, data_range=1.0, kernel_size=msssim_kernel_size(data.shape)
        )
        rows = []
        for index, subject in enumerate(tqdm(subjects, desc="reconstructing", disable=not progress)):
            image = data.get(index)[None]
            recon = vqvae(image)[0].clamp(0.0, 1.0)
            mse = float(torch.mean((recon - image) ** 2))
            rows.append(
                {
                    "subject": subject,
                    "mae": float(torch.mean(torch.abs(recon - image))),
                    "psnr": 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf,
                    "msssim": float(metric(recon, image).reshape(-1)[0]),
                }
            )
            if out_dir is not None:
                save_volume(
                    Path(out_dir) / f"{subject}.nii.gz",
                    recon[0, 0].numpy(),
                    nib.load(str(images[subject])).affine,
                    description="morphgen VQ-VAE reconstruction",
                )
        keys = ("mae", "psnr", "msssim")
        mean = {"subject": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}
        lines = ["subject\tmae\tpsnr\tmsssim"]
        lines += [
            f"{r['subject']}\t{r['mae']:.6g}\t{r['psnr']:.6g}\t{r['msssim']:.6g}" for r in rows + [mean]
        ]
        with atomic_output(out_tsv) as tmp:
            tmp.write_text("\n".join(lines) + "\n")

    # ---- prior ---------------------------------------------------------------------------------------------
    def fit_prior(
        self, latents: list[Path], val_latents: list[Path], out_dir: Path, progress: bool = True
    ) -> None:
        """Train the transformer on every copy of ``latents``; validate on copy 0 of ``val_latents``.

        Files are those of :func:`morphgen.models.prior.train_prior` (model.pt, checkpoints/last.pt, loss.tsv,
        nll.tsv).
        """
        from morphgen.models.prior import train_prior

        codebook_size = int(self.ae_cfg["codebook_size"])
        if not latents or not val_latents:
            raise ConfigError(
                f"the prior needs training and held-out latents, got {len(latents)} and {len(val_latents)}"
            )
        train_tokens = load_token_sequences(latents, copies="all")
        val_tokens = load_token_sequences(val_latents, copies="first")
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
        train_prior(
            train_tokens,
            val_tokens,
            codebook_size,
            self.prior_cfg,
            Path(out_dir),
            self.seed,
            progress=progress,
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

        Uses ``model.sampling`` (batch_size, temperature, top_k, precision, seed: default model.seed,
        checkpoint_minutes), on the GPU when there is one. The score is the mean raw PatchGAN output
        (least-squares GAN: about 1 for real-looking, 0 for fake-looking); ties keep the earlier sample.
        Memory holds the tokens of ``n_keep`` samples and one batch of volumes; the kept samples are decoded
        again at the end. Every ``checkpoint_minutes`` and on a stop signal (``models.preemption``) the
        scores, kept tokens and sampler state go to ``out_dir/checkpoints/generate.pt``; a rerun with the same
        models and settings resumes there and writes what an uninterrupted run writes.
        """
        from morphgen.models.prior import load_prior, sample_tokens

        n_generate, n_keep = int(n_generate), int(n_keep)
        if n_generate < 1 or not 0 <= n_keep <= n_generate:
            raise ConfigError(
                f"generation needs 1 <= n_generate and 0 <= n_keep <= n_generate, got {n_generate}, {n_keep}"
            )
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        vqvae, disc, network = load_autoencoder(Path(model_path))
        vqvae, disc = vqvae.to(device), disc.to(device)
        prior = load_prior(Path(prior_path), device)
        latent = tuple(network["latent_shape"])
        length = int(np.prod(latent))
        codebook_size = int(network["codebook_size"])
        sampling = self.sampling_cfg
        batch_size = int(sampling.get("batch_size", 8))
        out_dir = Path(out_dir)
        resume = GenerationCheckpoint(
            out_dir / "checkpoints" / "generate.pt",
            {
                "n_generate": n_generate,
                "n_keep": n_keep,
                "sampling": {k: v for k, v in sampling.items() if k != "checkpoint_minutes"},
                "seed": self.seed,
                "device": device.type,
                "autoencoder": sha256sum(model_path),
                "prior": sha256sum(prior_path),
            },
            minutes=float(sampling.get("checkpoint_minutes", 10)),
        )
        generator = torch.Generator(device=device).manual_seed(int(sampling.get("seed", self.seed)))
        best = resume.restore(generator) or BestSamples(n_keep)
        batches = sample_tokens(
            prior,
            n=n_generate - best.count,
            batch_size=batch_size,
            temperature=float(sampling.get("temperature", 1.0)),
            top_k=sampling.get("top_k"),
            progress=progress,
            precision=str(sampling.get("precision", "fp32")),
            generator=generator,
        )
        for tokens in batches:
            tokens = np.asarray(tokens)[: n_generate - best.count]
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
            images = decode_tokens(vqvae, codes.to(device)).clamp(0.0, 1.0)
            for code, score in zip(codes, discriminator_score(disc, images).tolist(), strict=True):
                best.add(score, code.clone())
            if best.count >= n_generate:
                break
            resume.save_if_due(best, generator, of=n_generate)
        if best.count < n_generate:
            raise RuntimeError(f"the prior produced {best.count} samples, {n_generate} were asked for")

        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[int, str] = {}
        kept = best.kept()
        for start in range(0, len(kept), batch_size):
            chunk = kept[start : start + batch_size]
            codes = torch.stack([code for _, _, code in chunk]).to(device)
            volumes = decode_tokens(vqvae, codes).clamp(0.0, 1.0).cpu().numpy()
            for rank, (index, _, _), volume in zip(
                range(start, start + len(chunk)), chunk, volumes, strict=True
            ):
                name = sample_filename(rank)
                save_volume(
                    out_dir / name, volume[0], affine, description="morphgen synthetic (VQ-VAE + transformer)"
                )
                files[index] = name
        scores = best.scores
        lines = ["index\tscore\tkept\tfile"]
        for index, score in enumerate(scores):
            lines.append(f"{index}\t{score:.9g}\t{index in files}\t{files.get(index, '')}")
        with atomic_output(out_dir / SCORES_TSV) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        resume.finish()

"""What families whose first stage is an autoencoder share: training, fine-tuning, encoding, reconstruction.

A family names its codec (``autoencoders.codecs``: a VQ-VAE or a KL autoencoder); the autoencoder trainer, the
encoding of subjects with seeded augmented copies and the reconstruction metrics are the same for all.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.checkpoint import load_autoencoder
from morphgen.models.autoencoders.codecs import Codec, codec_of
from morphgen.models.autoencoders.latents import encode_subjects
from morphgen.models.autoencoders.training import train_autoencoder
from morphgen.models.base import ModelFamily
from morphgen.models.engine.data import VolumeAugmentation, VolumeDataset
from morphgen.models.engine.distributed import distributed_settings
from morphgen.nifti import atomic_output, save_volume

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


class AutoencoderFamily(ModelFamily):
    """A family whose first stage is an autoencoder of kind ``codec_class``, configured by
    ``config['model']['autoencoder']``; subclasses add the prior and generation."""

    codec_class: type[Codec]

    def __init__(self, model_cfg: dict):
        super().__init__(model_cfg)
        if not isinstance(model_cfg.get("autoencoder"), dict):
            raise ConfigError("model.autoencoder is missing from the configuration")
        self.ae_cfg: dict = model_cfg["autoencoder"]
        self.seed = int(model_cfg.get("seed", 0))
        _, self.lr_scaling = distributed_settings(model_cfg)

    @property
    def codec(self) -> Codec:
        return self.codec_class(self.ae_cfg)

    # ---- autoencoder ---------------------------------------------------------------------------------------
    def fit_autoencoder(
        self, train_images: list[Path], val_images: list[Path], out_dir: Path, progress: bool = True
    ) -> None:
        """Train the autoencoder and discriminator (see :meth:`ModelFamily.fit_autoencoder` for the files).

        ``model.pt`` is a dict: format, network (plain-dict config incl. image_shape, latent_shape and, for
        a KL autoencoder, kind),
        autoencoder and discriminator state dicts, info (epochs, steps, seed, n_train).
        """
        train_autoencoder(
            train_images,
            val_images,
            self.ae_cfg,
            Path(out_dir),
            self.seed,
            progress=progress,
            lr_scaling=self.lr_scaling,
            codec=self.codec,
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
            codec=self.codec_class(cfg),
        )

    def encode(
        self,
        model_path: Path,
        images: dict[str, Path],
        out_dir: Path,
        augmented_copies: int,
        progress: bool = True,
    ) -> None:
        """Write ``out_dir/<subject>.npy``: per copy (1 + copies), what the codec stores (VQ-VAE: int16
        tokens (h, w, d), int32 for codebooks > 32768; KL: float32 means (channels, h, w, d)).

        Copy 0 is the unaugmented volume; copies 1.. use ``model.autoencoder.augment`` with a generator
        seeded by (model.seed, subject, copy).
        """
        if int(augmented_copies) < 0:
            raise ConfigError(f"model.latents.augmented_copies must be >= 0, got {augmented_copies}")
        model, _, network = load_autoencoder(Path(model_path))
        augment = VolumeAugmentation(self.ae_cfg.get("augment"))
        encode_subjects(
            model,
            images,
            Path(out_dir),
            int(augmented_copies),
            augment,
            seed=self.seed,
            batch_size=int(self.ae_cfg.get("batch_size", 4)),
            progress=progress,
            codec=codec_of(network, self.ae_cfg),
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

        model, _, network = load_autoencoder(Path(model_path))
        codec = codec_of(network, self.ae_cfg)
        subjects = list(images)
        data = VolumeDataset([images[s] for s in subjects], subjects, cache=False)
        metric = MultiScaleSSIMMetric(
            spatial_dims=3, data_range=1.0, kernel_size=msssim_kernel_size(data.shape)
        )
        rows = []
        for index, subject in enumerate(tqdm(subjects, desc="reconstructing", disable=not progress)):
            image = data.get(index)[None]
            recon = codec.reconstruction(model, image).clamp(0.0, 1.0)
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
                    description=f"morphgen {codec.label} reconstruction",
                )
        keys = ("mae", "psnr", "msssim")
        mean = {"subject": "mean", **{k: float(np.mean([r[k] for r in rows])) for k in keys}}
        lines = ["subject\tmae\tpsnr\tmsssim"]
        lines += [
            f"{r['subject']}\t{r['mae']:.6g}\t{r['psnr']:.6g}\t{r['msssim']:.6g}" for r in rows + [mean]
        ]
        with atomic_output(out_tsv) as tmp:
            tmp.write_text("\n".join(lines) + "\n")

"""The contract every model family fulfils, so that one set of Snakemake rules runs any of them.

A *model family* is the pair "compression model + generative prior" (here a VQ-VAE with a transformer prior;
later latent diffusion, a metamorphic VAE, a multi-level VQ-VAE). The workflow only ever talks to a family
through the five methods below and the files they write, so adding a family means:

1. subclass :class:`ModelFamily` in ``morphgen/models/families/<name>/family.py`` (the package holds the
   family's networks and prior too);
2. decorate it with ``@register_family("<name>")`` (below) and add its line to the catalogue
   (``morphgen.models.catalogue``), which names the module and says what the workflow needs to know;
3. read its hyper-parameters from ``config['model']`` (given to ``__init__``; ``config['model']['family']``
   selects the family), raising :class:`morphgen.errors.ConfigError` for missing or inconsistent keys;
4. honour every file contract stated in the method docstrings: the file names are fixed because the rules
   name them. Writes must be atomic (``morphgen.nifti.atomic_output`` / ``save_volume``) and long loops must
   show a tqdm bar on stderr unless ``progress=False``.

What a family's "latent" file holds is its own business (tokens for a VQ-VAE, continuous latents for a
diffusion model), as long as ``encode`` writes ``<subject>.npy`` and ``fit_prior`` reads those files.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from morphgen.errors import ConfigError

# File names shared by the workflow and every family.
MODEL_FILE = "model.pt"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
LOSS_TSV = "loss.tsv"
LOSS_PNG = "loss.png"
HELDOUT_TSV = "heldout.tsv"
SCORES_TSV = "scores.tsv"
REQUESTS_TSV = "requests.tsv"


def sample_filename(rank: int) -> str:
    """Name of the kept sample of the given rank (0 = best score)."""
    return f"sample-{rank:04d}.nii.gz"


class ModelFamily(abc.ABC):
    """A compression model plus a prior over its latents, driven through files.

    Args:
        model_cfg: ``config['model']`` as read from config.yaml.
    """

    #: the name the family is registered under (set by ``register_family``)
    name: str = ""
    #: whether :meth:`fit_prior` needs the subjects' covariates (age, sex, volumes ...)
    conditioned: bool = False

    def __init__(self, model_cfg: dict):
        self.model_cfg = model_cfg

    @abc.abstractmethod
    def fit_autoencoder(
        self, train_images: list[Path], val_images: list[Path], out_dir: Path, progress: bool = True
    ) -> None:
        """Train the compression model on preprocessed volumes (float, [0, 1], on the working grid).

        Writes ``out_dir/model.pt`` (final weights plus what is needed to rebuild the networks, loadable
        with ``torch.load(weights_only=True)``), ``out_dir/checkpoints/last.pt`` (rewritten atomically every
        epoch), ``out_dir/loss.tsv`` (one row per epoch: epoch, step, then one column per loss term) and
        ``out_dir/loss.png``. A rerun after a crash resumes from ``last.pt``.
        """

    def finetune_autoencoder(
        self,
        pretrained: Path,
        train_images: list[Path],
        val_images: list[Path],
        out_dir: Path,
        settings: dict,
        progress: bool = True,
    ) -> None:
        """Fine-tune a trained autoencoder (``pretrained``, a ``model.pt`` of this family) on other images.

        ``settings`` override the family's autoencoder training settings (epochs, lr, ...); ``patience``
        stops when the loss on ``val_images`` has not improved for that many epochs, and the best epoch is
        kept. Writes the files of :meth:`fit_autoencoder`. Families that cannot fine-tune raise ConfigError.
        """
        raise ConfigError(f"model family {type(self).__name__} cannot fine-tune a pre-trained autoencoder")

    @abc.abstractmethod
    def encode(
        self,
        model_path: Path,
        images: dict[str, Path],
        out_dir: Path,
        augmented_copies: int,
        progress: bool = True,
    ) -> None:
        """Encode each subject's volume into its latent representation.

        Writes ``out_dir/<subject>.npy`` per subject: an array whose first axis is the copy
        (``1 + augmented_copies``); copy 0 is the unaugmented volume, the others are seeded random
        augmentations. Spatial axes are in RAS+ order, as the images are RAS+ on the working grid.
        """

    @abc.abstractmethod
    def evaluate_reconstruction(
        self,
        model_path: Path,
        images: dict[str, Path],
        out_tsv: Path,
        out_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        """Reconstruct held-out volumes and measure how close they are.

        Writes ``out_tsv`` with columns subject, mae, psnr, msssim (one row per subject, then a row with
        subject ``mean``); with ``out_dir``, also ``out_dir/<subject>.nii.gz`` reconstructions (float32,
        the input's affine).
        """

    @abc.abstractmethod
    def fit_prior(
        self,
        latents: list[Path],
        val_latents: list[Path],
        out_dir: Path,
        progress: bool = True,
        covariates: pd.DataFrame | None = None,
    ) -> None:
        """Train the generative prior of one sub-population on the latent files written by :meth:`encode`.

        ``covariates``: one row per subject (``participant_id``, the latent file's name, then one column per
        covariate) for families that condition on them (:attr:`conditioned`); the others ignore it. Writes
        ``out_dir/model.pt``, ``out_dir/checkpoints/last.pt``, ``out_dir/loss.tsv`` and
        ``out_dir/heldout.tsv`` (one row: the prior's score on ``val_latents``, that of a trivial baseline,
        and their ``ratio``); resumes. A family whose catalogue line sets ``prior_reads_autoencoder`` also
        takes ``model_path=``, the trained autoencoder's ``model.pt`` (seed 002 codes its latents again).
        """

    @abc.abstractmethod
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
        """Draw ``n_generate`` samples, keep the ``n_keep`` best by a quality score, write them.

        Streaming: memory must not grow with ``n_generate``. Writes the kept samples, clipped to [0, 1], as
        float32 NIfTI ``out_dir/sample-0000.nii.gz`` ... (rank 0 = highest score) with ``affine``, and
        ``out_dir/scores.tsv`` with one row per generated sample: index, score, kept, file (empty if not
        kept). ``covariates``: for a :attr:`conditioned` family, the subjects whose covariates the samples are
        conditioned on, each sample on one drawn at random (``participant_id`` and one column per covariate;
        default: the prior's own training subjects); the others ignore it.
        """

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
        """One sample per requested row of covariates, for a :attr:`conditioned` family.

        ``requests``: a table of covariates in their own units (``morphgen.models.covariates.read_requests``);
        ``grid``: ``model.conditioning.requests.grid`` (rows varying one covariate, the others typical).
        Writes ``out_dir/<sample_id>.nii.gz`` and ``out_dir/requests.tsv`` (the covariates asked, normalised,
        and flagged when outside the training range) and returns that table.
        """
        raise ConfigError(
            f"model family {self.name or type(self).__name__} is not conditioned on covariates: "
            "it cannot sample from requested covariates (model.conditioning.requests)"
        )


_FAMILIES: dict[str, type[ModelFamily]] = {}


def register_family(name: str) -> Callable[[type[ModelFamily]], type[ModelFamily]]:
    """Class decorator that makes a :class:`ModelFamily` available under ``name``."""

    def decorate(cls: type[ModelFamily]) -> type[ModelFamily]:
        if not (isinstance(cls, type) and issubclass(cls, ModelFamily)):
            raise TypeError(f"{cls!r} is not a ModelFamily subclass")
        known = _FAMILIES.get(name)
        if known is not None and known is not cls:
            raise ValueError(
                f"model family {name!r} is already registered by {known.__module__}.{known.__name__}"
            )
        cls.name = name
        _FAMILIES[name] = cls
        return cls

    return decorate

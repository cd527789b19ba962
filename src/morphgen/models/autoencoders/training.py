"""Training an autoencoder with its PatchGAN discriminator: resumable, deterministic on CPU for a given seed.

The autoencoder is a VQ-VAE (seed 000) or a KL autoencoder (seed 004), described by a codec
(``morphgen.models.autoencoders.codecs``); everything else here is shared.

Determinism: network initialisation comes from ``torch.manual_seed(seed)``; the data order of epoch ``e`` and
the augmentation of subject ``i`` in epoch ``e`` come from numpy generators seeded with ``(seed, e[, i])``, so
they do not depend on where a run was interrupted; torch's random state is checkpointed. A run resumed from
``checkpoints/last.pt`` therefore ends with exactly the weights of an uninterrupted one, also when it was
stopped by a signal in the middle of an epoch (the checkpoint then records the position in the epoch).

Several processes (``morphgen.models.engine.distributed``): each global batch of ``world size x batch_size``
subjects is cut into contiguous shares, one per process; DDP averages the gradients (losses are weighted by
share size, so the average is the global batch's mean), MONAI's EMA codebook sums its statistics over the
processes, codebook restarts draw from the gathered encoder outputs, and rank 0 writes every file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.checkpoint import AUTOENCODER_FORMAT, save_autoencoder
from morphgen.models.autoencoders.codecs import Codec, VQCodec
from morphgen.models.autoencoders.discriminator import build_discriminator
from morphgen.models.autoencoders.losses import (
    ReconstructionLoss,
    adversarial_criterion,
    build_perceptual_loss,
    discriminator_loss,
    generator_adversarial_loss,
)
from morphgen.models.autoencoders.vqvae import restart_dead_codes, token_indices
from morphgen.models.base import LOSS_PNG, LOSS_TSV, MODEL_FILE
from morphgen.models.engine.data import VolumeAugmentation, VolumeDataset, seed_for, torch_generator
from morphgen.models.engine.distributed import current_world, scaled_lr
from morphgen.models.engine.precision import autocast_for
from morphgen.models.engine.preemption import stop_requested
from morphgen.models.engine.resume import RunCheckpoint, random_state, set_random_state
from morphgen.models.engine.schedules import SGDR_KEYS, sgdr_lambda
from morphgen.nifti import atomic_output
from morphgen.weights import load_weights_only

CHECKPOINT_FORMAT = "morphgen-vqvae-checkpoint-1"
# Codebook entries whose EMA usage (tokens per step) falls below this are restarted on encoder outputs;
# model.autoencoder.dead_code_threshold overrides it, 0 turns restarts off (MONAI / the paper as published).
DEAD_CODE_THRESHOLD = 0.01
OPTIMISERS = ("adam", "adamw")
SCHEDULES = ("exponential", "sgdr")


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings from ``config['model']['autoencoder']``."""

    epochs: int
    batch_size: int
    lr: float
    lr_decay: float
    disc_lr: float
    l1_weight: float
    fft_weight: float
    adversarial_weight: float
    adversarial_start_epoch: int
    dead_code_threshold: float = DEAD_CODE_THRESHOLD
    precision: str = "fp32"
    activation_checkpointing: bool = False
    patience: int = 0  # early stopping: epochs without a better validation loss before stopping (0: off)
    grad_clip: float = 0.0  # largest gradient norm of the autoencoder's update (0: no clipping, the paper)
    optimizer: str = "adam"  # adam (seeds 000, 004) | adamw (seed 001)
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    lr_schedule: str = "exponential"  # exponential (lr_decay per step) | sgdr (seed 003, keys in sgdr)
    sgdr: dict | None = None  # first_steps, t_mul, m_mul, alpha of TF's cosine_decay_restarts

    @classmethod
    def from_config(cls, ae_cfg: dict) -> TrainingSettings:
        try:
            settings = cls(
                epochs=int(ae_cfg["epochs"]),
                batch_size=int(ae_cfg["batch_size"]),
                lr=float(ae_cfg["lr"]),
                lr_decay=float(ae_cfg["lr_decay"]),
                disc_lr=float(ae_cfg["disc_lr"]),
                l1_weight=float(ae_cfg["l1_weight"]),
                fft_weight=float(ae_cfg["fft_weight"]),
                adversarial_weight=float(ae_cfg["adversarial_weight"]),
                adversarial_start_epoch=int(ae_cfg["adversarial_start_epoch"]),
                dead_code_threshold=float(ae_cfg.get("dead_code_threshold", DEAD_CODE_THRESHOLD)),
                precision=str(ae_cfg.get("precision", "fp32")),
                activation_checkpointing=bool(ae_cfg.get("activation_checkpointing", False)),
                patience=int(ae_cfg.get("patience", 0) or 0),
                grad_clip=float(ae_cfg.get("grad_clip", 0.0) or 0.0),
                optimizer=str(ae_cfg.get("optimizer", "adam")),
                weight_decay=float(ae_cfg.get("weight_decay", 0.0) or 0.0),
                lr_schedule=str(ae_cfg.get("lr_schedule", "exponential")),
                sgdr=dict(ae_cfg.get("sgdr") or {}),
            )
        except KeyError as exc:
            raise ConfigError(f"model.autoencoder.{exc.args[0]} is missing from the configuration") from None
        if settings.epochs < 1 or settings.batch_size < 1:
            raise ConfigError("model.autoencoder: epochs and batch_size must be at least 1")
        if settings.grad_clip < 0:
            raise ConfigError(f"model.autoencoder.grad_clip must be >= 0, got {settings.grad_clip}")
        if settings.optimizer not in OPTIMISERS:
            raise ConfigError(
                f"model.autoencoder.optimizer must be one of {sorted(OPTIMISERS)}, got {settings.optimizer!r}"
            )
        if settings.weight_decay < 0:
            raise ConfigError(f"model.autoencoder.weight_decay must be >= 0, got {settings.weight_decay}")
        if settings.weight_decay and settings.optimizer != "adamw":
            raise ConfigError("model.autoencoder.weight_decay needs optimizer: adamw (Adam's would be L2)")
        if not 0 < settings.lr_decay <= 1:
            raise ConfigError(f"model.autoencoder.lr_decay must lie in (0, 1], got {settings.lr_decay}")
        if settings.lr_schedule not in SCHEDULES:
            raise ConfigError(
                f"model.autoencoder.lr_schedule must be one of {list(SCHEDULES)}, "
                f"got {settings.lr_schedule!r}"
            )
        if settings.lr_schedule == "sgdr":
            unknown = set(settings.sgdr) - set(SGDR_KEYS)
            if unknown or "first_steps" not in settings.sgdr:
                raise ConfigError(
                    f"model.autoencoder.sgdr needs first_steps and takes only {list(SGDR_KEYS)}"
                    + (f"; unknown: {sorted(unknown)}" if unknown else "")
                )
        return settings

    def scheduler(self, optimiser: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The learning-rate schedule of ``optimiser``, stepped once per update."""
        if self.lr_schedule == "sgdr":
            return torch.optim.lr_scheduler.LambdaLR(optimiser, sgdr_lambda(**self.sgdr))
        return torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=self.lr_decay)

    def optimiser(self, parameters, lr: float) -> torch.optim.Optimizer:
        """The autoencoder's optimiser."""
        if self.optimizer == "adamw":
            return torch.optim.AdamW(parameters, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.Adam(parameters, lr=lr)

    def adversarial_on(self, epoch: int) -> bool:
        """Whether the GAN terms are used in (0-based) ``epoch``: after the reconstruction-only warm-up."""
        return self.adversarial_weight > 0 and epoch >= self.adversarial_start_epoch


class AutoencoderTrainer:
    """Owns the networks, optimisers and schedulers of one training run in ``out_dir``.

    Args:
        train_images / val_images: preprocessed volumes on the working grid (val may be empty).
        ae_cfg: ``config['model']['autoencoder']``.
        out_dir: where model.pt, checkpoints/last.pt, loss.tsv and loss.png go.
        seed: ``config['model']['seed']``.
    """

    def __init__(
        self,
        train_images: list[Path],
        val_images: list[Path],
        ae_cfg: dict,
        out_dir: Path,
        seed: int,
        device: str | torch.device | None = None,
        init_from: Path | None = None,
        lr_scaling: str = "sqrt",
        codec: Codec | None = None,
    ):
        self.codec = codec or VQCodec(ae_cfg)
        self.world = current_world()
        self.device = torch.device(device) if device else self.world.device()
        self.settings = TrainingSettings.from_config(ae_cfg)
        self.global_batch = self.settings.batch_size * self.world.size
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        augment = VolumeAugmentation(ae_cfg.get("augment"))
        self.train_data = VolumeDataset(train_images, augment=augment if augment.enabled else None)
        self.val_data = VolumeDataset(val_images) if val_images else None
        if self.val_data is not None and self.val_data.shape != self.train_data.shape:
            raise ConfigError(
                f"validation volumes have shape {self.val_data.shape}, "
                f"training volumes {self.train_data.shape}"
            )
        self.network = self.codec.network_config(self.train_data.shape)
        perceptual, perceptual_weight = build_perceptual_loss(ae_cfg.get("perceptual"))

        torch.manual_seed(self.seed)
        self.autoencoder = self.codec.build(self.network).to(self.device)
        self.disc = build_discriminator(self.network).to(self.device)
        self.init_from = None if init_from is None else Path(init_from)
        if self.init_from is not None:  # a pre-trained model keeps the mean image it learnt with
            self._load_pretrained(self.init_from)
        else:  # the mean image of a VQ-VAE, the template of a metamorphic autoencoder
            self.codec.initialise(self.autoencoder, self.network, self.train_data, self.world)
        if self.settings.patience and self.val_data is None:
            raise ConfigError("early stopping (patience) needs validation images")
        self.recon_loss = ReconstructionLoss(
            self.settings.l1_weight, self.settings.fft_weight, perceptual, perceptual_weight
        ).to(self.device)
        self.adv_criterion = adversarial_criterion()
        # the EMA codebook has no gradient
        self.trainable = [p for p in self.autoencoder.parameters() if p.requires_grad]
        lr = scaled_lr(self.settings.lr, self.world.size, lr_scaling)
        disc_lr = scaled_lr(self.settings.disc_lr, self.world.size, lr_scaling)
        self.opt_g = self.settings.optimiser(self.trainable, lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=disc_lr)
        self.sched_g = self.settings.scheduler(self.opt_g)
        self.sched_d = self.settings.scheduler(self.opt_d)
        self.autocast = autocast_for(self.settings.precision, self.device)
        self.best = {"val_total": math.inf, "epoch": 0}  # early stopping: the best epoch and its weights
        self.stale_epochs = 0
        self.epoch = 0  # epochs completed
        self.step = 0  # generator updates completed
        self.history: list[dict[str, float]] = []
        self.position: dict | None = None  # how far into self.epoch a stopped run got
        recompute = self.settings.activation_checkpointing
        self.reconstructor = _Reconstructor(self.codec, self.autoencoder, self.autocast, recompute)
        self.critic: torch.nn.Module = self.disc
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # codebook, mean image and the rest are equal on every process by construction: no broadcast
            self.reconstructor = DDP(self.reconstructor, device_ids=ids, forward_sync_buffers=False)
            disc = self.disc
            if self.device.type == "cuda":  # batch statistics over the global batch (CUDA only in torch)
                disc = torch.nn.SyncBatchNorm.convert_sync_batchnorm(disc)
            self.critic = DDP(disc, device_ids=ids)

    # ---- checkpoints -------------------------------------------------------------------------------------
    @property
    def run(self) -> RunCheckpoint:
        """What a resumption must share with this run: the network, the seed and the global batch."""
        fingerprint = {"network": self.network, "seed": self.seed, "global_batch": self.global_batch}
        return RunCheckpoint(self.out_dir, CHECKPOINT_FORMAT, fingerprint, "autoencoder")

    @property
    def checkpoint_path(self) -> Path:
        return self.run.path

    def state(self) -> dict:
        return {
            "network": self.network,
            "seed": self.seed,
            "epoch": self.epoch,
            "step": self.step,
            "autoencoder": self.autoencoder.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "rng": random_state(self.device),
            "history": self.history,
            "best": self.best,
            "stale_epochs": self.stale_epochs,
            "global_batch": self.global_batch,
            "position": self.position,
        }

    def _load_pretrained(self, path: Path) -> None:
        """Start from a trained model (fine-tuning): both networks and the codebook."""
        blob = load_weights_only(path, "pre-trained autoencoder")
        if blob.get("format") != AUTOENCODER_FORMAT:
            raise ConfigError(f"{path} is not a morphgen autoencoder (format {blob.get('format')!r})")
        if blob["network"] != self.network:
            changed = sorted(k for k in self.network if blob["network"].get(k) != self.network[k])
            raise ConfigError(
                f"the pre-trained autoencoder {path} has another network ({', '.join(changed)} differ); "
                "fine-tuning needs the same model.autoencoder network settings and grid"
            )
        self.autoencoder.load_state_dict(blob["autoencoder"])
        self.disc.load_state_dict(blob["discriminator"])

    def resume(self) -> bool:
        """Load ``checkpoints/last.pt`` if it is of this run (one of another is set aside, see
        ``engine.resume``)."""
        state = self.run.load(set_aside=self.world.is_main)
        self.world.barrier()
        if state is None:
            return False
        self.autoencoder.load_state_dict(state["autoencoder"])
        self.disc.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        set_random_state(state["rng"], self.device)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.best = state.get("best", self.best)
        self.stale_epochs = int(state.get("stale_epochs", 0))
        self.position = state.get("position")
        if self.position is not None and not self.world.is_main:  # rank 0 carries the epoch's partial sums
            self.position["sums"] = dict.fromkeys(self.position["sums"], 0.0)
        return True

    # ---- one epoch -----------------------------------------------------------------------------------------
    def _critic(self, images: torch.Tensor, synchronised: bool = False) -> torch.Tensor:
        """The discriminator's last output (patch logits), in float32. ``synchronised``: through DDP (its
        own update); the generator's adversarial term goes around it, as the discriminator's gradients from
        that pass are thrown away."""
        with self.autocast():
            return (self.critic if synchronised else self.disc)(images)[-1].float()

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches; a last batch smaller than the number of processes is left out."""
        order = np.random.default_rng(seed_for(self.seed, "order", epoch)).permutation(len(self.train_data))
        size = self.global_batch
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        return [b for b in batches if len(b) >= self.world.size]

    def _stop_now(self) -> int | None:
        """The stop signal if any process received one (all processes stop after the same step)."""
        signum = stop_requested() or 0
        if self.world.distributed:
            signum = int(self.world.all_reduce(torch.tensor([signum], device=self.device), op="max")[0])
        return signum or None

    def _interrupt(self, signum: int) -> None:
        """Checkpoint mid-epoch and stop. The epoch's partial sums are the processes' together, kept by
        rank 0 on resumption, so a rerun with any number of processes logs what an uninterrupted one would."""
        position = self.position
        position["sums"] = self.world.sum_values(position["sums"], self.device)
        if self.codec.has_codebook:
            position["used"] = self._codes_used(position)
        if self.world.is_main:
            self.run.save(self.state())
        self.world.barrier()
        self.run.stop(None, self.epoch, self.step, signum)

    def _codes_used(self, position: dict) -> torch.Tensor:
        """The codebook entries any process used so far in the epoch (bool, on CPU)."""
        used = self.world.all_reduce(position["used"].to(self.device, torch.int32), op="max")
        return used.cpu().bool()

    def train_epoch(self, bar: tqdm | None = None) -> dict[str, float]:
        """One pass over the training set (from where a stopped run left it): mean of each loss term, codebook
        entries used and restarted. On a stop signal: checkpoint after the current step and raise
        :class:`TrainingInterrupted`."""
        epoch = self.epoch
        self.codec.start_epoch(epoch)
        adversarial = self.settings.adversarial_on(epoch)
        self.autoencoder.train()
        self.disc.train()
        batches = self._batches(epoch)
        if self.position is None:
            self.position = {"batch": 0, "sums": {}}
            if self.codec.has_codebook:
                used = torch.zeros(self.network["codebook_size"], dtype=torch.bool)
                self.position.update(used=used, restarts=0)
            elif self.codec.restarts_codes:
                self.position.update(restarts=0)
        position = self.position
        sums: dict[str, float] = position["sums"]
        for b in range(position["batch"], len(batches)):
            global_batch = batches[b]
            indices = global_batch[self.world.share(len(global_batch))]
            # DDP averages the processes' gradients; weighting each by its share gives the global batch mean
            weight = len(indices) * self.world.size / len(global_batch)
            rngs = None
            if self.train_data.augment is not None:
                rngs = [np.random.default_rng(seed_for(self.seed, "augment", epoch, int(i))) for i in indices]
            images = self.train_data.batch(indices, rngs).to(self.device)

            self.opt_g.zero_grad(set_to_none=True)
            encodings, recon, regularisers = self.reconstructor(images)
            loss_g, terms = self.recon_loss(recon, images)
            loss_g = loss_g + sum(regularisers.values())
            terms.update(regularisers)
            if adversarial:
                gen_adv = generator_adversarial_loss(self.adv_criterion, self._critic(recon))
                loss_g = loss_g + self.settings.adversarial_weight * gen_adv
                terms["generator_adversarial"] = gen_adv
            (loss_g * weight).backward()
            # the norm is logged either way: spikes in it were what killed the demo's encoders
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                self.trainable, self.settings.grad_clip or math.inf
            )
            self.opt_g.step()
            self.sched_g.step()
            if self.codec.has_codebook:
                self._track_codes(encodings, position)
            elif self.codec.restarts_codes and self.settings.dead_code_threshold > 0:
                generator = torch_generator(self.seed, "restart", self.step)
                position["restarts"] += self.codec.restart_codes(
                    self.autoencoder, encodings, self.world, generator
                )

            if adversarial:
                self.opt_d.zero_grad(set_to_none=True)
                loss_d = discriminator_loss(
                    self.adv_criterion,
                    self._critic(recon.detach(), synchronised=True),
                    self._critic(images, synchronised=True),
                )
                (self.settings.adversarial_weight * loss_d * weight).backward()
                self.opt_d.step()
                self.sched_d.step()
                terms["discriminator"] = loss_d
            terms["total"] = loss_g
            for key, value in terms.items():  # this process's share, weighted as its gradient
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * weight / self.world.size
            self.step += 1
            position["batch"] = b + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss_g.detach()):.4f}")
            signum = self._stop_now()
            if signum is not None:
                self._interrupt(signum)
        means = {key: total / len(batches) for key, total in self.world.sum_values(sums, self.device).items()}
        self.position = None
        if self.codec.restarts_codes:
            return {**means, "codes_restarted": position["restarts"]}
        if not self.codec.has_codebook:
            return means
        used = self._codes_used(position)
        return {**means, "codes_used": int(used.sum()), "codes_restarted": position["restarts"]}

    def _track_codes(self, encodings: torch.Tensor, position: dict) -> None:
        """Codebook entries used this epoch; entries unused for long restart on encoder outputs."""
        with torch.no_grad():
            position["used"] |= torch.bincount(
                token_indices(self.autoencoder, encodings).flatten().cpu(),
                minlength=len(position["used"]),
            ).bool()
        if self.settings.dead_code_threshold > 0:
            generator = torch_generator(self.seed, "restart", self.step)
            position["restarts"] += restart_dead_codes(
                self.autoencoder,
                self.world.all_gather(encodings.detach()),
                self.settings.dead_code_threshold,
                generator,
            )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean reconstruction terms on the validation set (eval mode: the codebook is not updated); each
        process takes its share of the images."""
        if self.val_data is None:
            return {}
        self.autoencoder.eval()
        self.codec.start_epoch(self.epoch)  # validated as the epoch just trained
        keys = ("l1", "spectral", "perceptual", *self.codec.terms, "total")
        sums = torch.zeros(len(keys), dtype=torch.float64)
        share = self.world.share(len(self.val_data))
        size = self.settings.batch_size
        for start in range(share.start, share.stop, size):
            images = self.val_data.batch(range(start, min(share.stop, start + size))).to(self.device)
            _, recon, regularisers = self.codec.reconstruct(self.autoencoder, images, self.autocast)
            total, terms = self.recon_loss(recon, images)
            terms.update(regularisers)
            terms["total"] = total + sum(regularisers.values())
            values = [float(terms.get(k, math.nan)) * len(images) for k in keys]
            sums += torch.tensor(values, dtype=sums.dtype)
        self.autoencoder.train()
        sums = self.world.all_reduce(sums.to(self.device)).cpu()
        n = len(self.val_data)
        return {k: float(v) / n for k, v in zip(keys, sums, strict=True) if not math.isnan(v)}

    # ---- early stopping -----------------------------------------------------------------------------------
    @property
    def stopped_early(self) -> bool:
        return bool(self.settings.patience) and self.stale_epochs >= self.settings.patience

    def _track_best(self, val_total: float) -> None:
        if val_total < self.best["val_total"]:
            self.best = {
                "val_total": float(val_total),
                "epoch": self.epoch,
                "autoencoder": {
                    k: v.detach().cpu().clone() for k, v in self.autoencoder.state_dict().items()
                },
                "discriminator": {k: v.detach().cpu().clone() for k, v in self.disc.state_dict().items()},
            }
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1

    # ---- the run -------------------------------------------------------------------------------------------
    def fit(self, progress: bool = True) -> Path:
        """Train (resuming if possible) to ``epochs``; returns the path of ``model.pt``."""
        self.resume()
        steps_per_epoch = len(self._batches(0))
        bar = tqdm(
            total=self.settings.epochs * steps_per_epoch,
            initial=min(self.step, self.settings.epochs * steps_per_epoch),
            desc=f"{self.codec.label} training steps",
            disable=not (progress and self.world.is_main),
            unit="step",
        )
        with bar:
            while self.epoch < self.settings.epochs and not self.stopped_early:
                started = time.perf_counter()
                train = self.train_epoch(bar)
                val = self.validate()
                self.epoch += 1
                row = {"epoch": self.epoch, "step": self.step, "lr": self.sched_g.get_last_lr()[0]}
                row.update(train)
                row.update({f"val_{key}": value for key, value in val.items()})
                row["seconds"] = time.perf_counter() - started
                self.history.append(row)
                if self.settings.patience:
                    self._track_best(val["total"])
                if self.world.is_main:
                    self.run.save(self.state())
                    write_loss_table(self.history, self.out_dir / LOSS_TSV)
                    plot_losses(self.history, self.out_dir / LOSS_PNG)
                self.world.barrier()
        info = {
            "epochs": self.epoch,
            "steps": self.step,
            "seed": self.seed,
            "n_train": len(self.train_data),
            "processes": self.world.size,
            "global_batch": self.global_batch,
        }
        if self.init_from is not None:
            info["fine_tuned_from"] = str(self.init_from)
        if self.settings.patience:  # keep the epoch with the lowest validation loss
            self.autoencoder.load_state_dict(self.best["autoencoder"])
            self.disc.load_state_dict(self.best["discriminator"])
            info.update(best_epoch=int(self.best["epoch"]), stopped_early=self.stopped_early)
        path = self.out_dir / MODEL_FILE
        if self.world.is_main:
            if not (self.out_dir / LOSS_TSV).exists():  # resumed from a finished checkpoint
                write_loss_table(self.history, self.out_dir / LOSS_TSV)
                plot_losses(self.history, self.out_dir / LOSS_PNG)
            save_autoencoder(path, self.autoencoder, self.disc, self.network, info)
        self.world.barrier()
        return path


class _Reconstructor(torch.nn.Module):
    """The training forward pass of the autoencoder as one module, for DistributedDataParallel to wrap."""

    def __init__(self, codec: Codec, autoencoder: torch.nn.Module, autocast, recompute: bool):
        super().__init__()
        self.codec, self.autocast, self.recompute = codec, autocast, recompute
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return self.codec.reconstruct(self.autoencoder, images, self.autocast, self.recompute)


LOSS_COLUMNS = (
    "epoch",
    "step",
    "lr",
    "l1",
    "spectral",
    "perceptual",
    "quantisation",
    "kl",
    "generator_adversarial",
    "discriminator",
    "total",
    "grad_norm",
    "val_l1",
    "val_spectral",
    "val_perceptual",
    "val_quantisation",
    "val_kl",
    "val_total",
    "codes_used",
    "codes_restarted",
    "seconds",
)


def write_loss_table(history: list[dict[str, float]], path: Path) -> None:
    """loss.tsv: one row per epoch; terms that were not computed (no GAN yet, no val set) are ``nan``."""
    columns = [c for c in LOSS_COLUMNS if any(c in row for row in history) or c in ("epoch", "step")]
    # a codec's own terms (train, then validation) before the timing
    own = [c for row in history for c in row if c not in LOSS_COLUMNS]
    own = sorted(dict.fromkeys(own), key=lambda c: c.startswith("val_"))
    columns = columns[:-1] + own + columns[-1:] if columns[-1] == "seconds" else columns + own
    lines = ["\t".join(columns)]
    for row in history:
        cells = []
        for c in columns:
            value = row.get(c, math.nan)
            integer = c in ("epoch", "step", "codes_used", "codes_restarted")
            cells.append(str(int(value)) if integer else f"{value:.6g}")
        lines.append("\t".join(cells))
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    """loss.png: reconstruction terms (train and validation) and the adversarial terms per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_rec, ax_adv) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("total", "l1", "spectral", "quantisation", "kl", "val_total", "val_l1"):
        values = [row.get(key, math.nan) for row in history]
        if not all(math.isnan(v) for v in values):
            ax_rec.plot(epochs, values, label=key, linestyle="--" if key.startswith("val_") else "-")
    ax_rec.set_yscale("log")
    ax_rec.set_xlabel("epoch")
    ax_rec.set_title("reconstruction")
    ax_rec.legend(fontsize=8)
    for key in ("generator_adversarial", "discriminator"):
        values = [row.get(key, math.nan) for row in history]
        ax_adv.plot(epochs, values, label=key)
    ax_adv.set_xlabel("epoch")
    ax_adv.set_title("adversarial (least squares)")
    ax_adv.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def train_autoencoder(
    train_images: list[Path],
    val_images: list[Path],
    ae_cfg: dict,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    init_from: Path | None = None,
    lr_scaling: str = "sqrt",
    codec: Codec | None = None,
) -> Path:
    """Train (or resume) the autoencoder in ``out_dir`` (a VQ-VAE unless ``codec`` says otherwise); returns
    the path of ``model.pt``.

    With ``init_from`` (a ``model.pt``), training starts from that model: fine-tuning. ``ae_cfg['patience']``
    turns on early stopping on the validation loss; ``model.pt`` then holds the best epoch's weights.
    """
    trainer = AutoencoderTrainer(
        train_images,
        val_images,
        ae_cfg,
        out_dir,
        seed,
        init_from=init_from,
        lr_scaling=lr_scaling,
        codec=codec,
    )
    return trainer.fit(progress=progress)

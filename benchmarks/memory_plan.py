"""VQ-VAE training memory: estimates per precision and checkpointing, the batch that fits each GPU, and a
measured peak to check the estimate against.

Usage:
  python benchmarks/memory_plan.py --configfile config.yaml configs/paper/paper.yaml   # the table
  python benchmarks/memory_plan.py ... --measure --batch-size 1 --precision bf16      # + a real step

``--measure`` runs one step of morphgen's trainer on random images (encoder, codebook, decoder, L1 + FFT,
discriminator, backward, Adam) and reports the peak: ``torch.cuda.max_memory_allocated`` on a GPU, or the
growth of the process's peak resident memory on CPU. ``--shape`` overrides the grid (to check the estimate
on CPU at a grid that fits in RAM and time).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from morphgen.models.autoencoders.training import AutoencoderTrainer
from morphgen.models.memory import GIB, estimate_autoencoder_training, largest_batch
from morphgen.nifti import save_volume


def _update(config: dict, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _update(config[key], value)
        else:
            config[key] = value


def merged_config(paths: list[str]) -> dict:
    """Later files override earlier ones, key by key (as ``snakemake --configfile a b`` does); without
    snakemake, so that it runs on a GPU machine that has only PyTorch."""
    config: dict = {}
    for path in paths:
        with open(path) as handle:
            _update(config, yaml.safe_load(handle) or {})
    return config


def training_step(
    ae_cfg: dict, shape: tuple, batch: int, precision: str, recompute: bool, device: str
) -> float:
    """Peak memory (GiB) of one step of morphgen's own trainer (GAN terms on) on random images."""
    cfg = {
        **ae_cfg,
        "batch_size": batch,
        "precision": precision,
        "activation_checkpointing": recompute,
        "adversarial_start_epoch": 0,
        "augment": {"enabled": False},
    }
    with tempfile.TemporaryDirectory() as tmp:
        image = save_volume(Path(tmp) / "random.nii.gz", np.random.rand(*shape).astype(np.float32), np.eye(4))
        trainer = AutoencoderTrainer([image] * batch, [], cfg, Path(tmp) / "model", seed=0, device=device)
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        trainer.train_epoch()  # one batch: one generator and one discriminator step
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / GIB
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="+", default=["config.yaml"])
    parser.add_argument("--shape", type=int, nargs=3, help="grid to use instead of config's space.shape")
    parser.add_argument("--gpus", type=float, nargs="+", default=[24, 40, 80], help="GPU memory tiers (GiB)")
    parser.add_argument("--headroom", type=float, default=0.8)
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--recompute", action="store_true", help="per-block activation checkpointing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    config = merged_config(args.configfile)
    ae_cfg = config["model"]["autoencoder"]
    shape = tuple(args.shape or config["space"]["shape"])
    tiers = " ".join(f"batch@{g:g}GiB" for g in args.gpus)
    print(
        f"# grid {shape}, channels {ae_cfg['channels']}, headroom {args.headroom}, torch {torch.__version__}"
    )
    print(f"precision\tcheckpointing\tfixed_GiB\tper_sample_GiB\t{tiers.replace(' ', chr(9))}")
    for precision in ("fp32", "bf16"):
        for recompute in (False, True):
            est = estimate_autoencoder_training(ae_cfg, shape, precision, recompute)
            fits = "\t".join(str(largest_batch(est, g, args.headroom)) for g in args.gpus)
            print(f"{precision}\t{recompute}\t{est.fixed / GIB:.2f}\t{est.per_sample / GIB:.2f}\t{fits}")
    if args.measure:
        est = estimate_autoencoder_training(ae_cfg, shape, args.precision, args.recompute)
        start = time.perf_counter()
        peak = training_step(ae_cfg, shape, args.batch_size, args.precision, args.recompute, args.device)
        print(
            f"# measured on {args.device}: batch {args.batch_size}, {args.precision}, checkpointing "
            f"{args.recompute}: peak {peak:.2f} GiB, estimate {est.total(args.batch_size) / GIB:.2f} GiB, "
            f"step {time.perf_counter() - start:.1f} s"
        )


if __name__ == "__main__":
    main()

"""Train the latent diffusion family longer than the demo's budget allows, on a finished demo's files.

Usage (on a GPU machine, from the repository root; a finished LDM demo's ``results`` folder as input):
  python benchmarks/ldm_training_length.py --results results --out longer --diffusion-epochs 1200
  python benchmarks/ldm_training_length.py ... --autoencoder-epochs 120   # the autoencoder too, then encode
  python benchmarks/ldm_training_length.py ... --condition-dropout 0.2 --guidance-scale 3   # with guidance

The demo's settings (``--configfile``, as ``snakemake --configfile`` merges them) are kept but for the epochs.
Without ``--autoencoder-epochs`` the diffusion model learns the demo's own latents, so only its training
length changes. ``OUT`` gets the layout of ``results`` (``models/prior/cohort``, and with the autoencoder
``models/autoencoder`` and ``latents/tokens``): copied over a copy of the demo's results, the workflow's
``--rerun-triggers mtime`` then samples, segments and checks the conditioning with the longer-trained
models. Prints the seconds of each stage, then the spread of 8 DDIM-50 samples' latents against that of the
training latents (1 after scaling): a sampler that drifts shows here before any image is decoded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from memory_plan import merged_config

from morphgen import stages
from morphgen.models.families.ldm.diffusion import (
    PREDICTIONS,
    SCHEDULES,
    make_scheduler,
    noise_process,
    sample_latents,
    sampling_covariates,
)
from morphgen.models.families.ldm.training import load_diffusion
from morphgen.models.registry import build_family
from morphgen.preprocess.derivatives import find_preprocessed
from morphgen.tsv import read_tsv


def split_ids(results: Path) -> dict[str, list[str]]:
    """The subjects of each part of the split (train, test) that the demo's rules used."""
    subjects = read_tsv(results / "split" / "subjects.tsv")
    return {part: list(rows["participant_id"].astype(str)) for part, rows in subjects.groupby("split")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="a finished LDM demo's results folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--configfile", nargs="+", default=["config.yaml", "configs/demo/ldm.yaml"])
    parser.add_argument("--diffusion-epochs", type=int, required=True)
    parser.add_argument("--autoencoder-epochs", type=int, help="retrain the autoencoder and encode again")
    parser.add_argument("--prediction", choices=PREDICTIONS, help="model.diffusion.prediction")
    parser.add_argument("--schedule", choices=SCHEDULES, help="model.diffusion.schedule")
    parser.add_argument("--condition-dropout", type=float, help="model.diffusion.condition_dropout")
    parser.add_argument(
        "--guidance-scale", type=float, default=1.0, help="for the spread (the workflow reads the config's)"
    )
    args = parser.parse_args(argv)

    config = merged_config(args.configfile)
    model_cfg = config["model"]
    model_cfg["diffusion"]["epochs"] = args.diffusion_epochs
    for key in ("prediction", "schedule", "condition_dropout"):
        if getattr(args, key) is not None:
            model_cfg["diffusion"][key] = getattr(args, key)
    results, out = args.results, args.out
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# {device}, torch {torch.__version__}, diffusion epochs {args.diffusion_epochs}", flush=True)
    print("stage\tepochs\tseconds", flush=True)
    ids = split_ids(results)
    tokens = results / "latents" / "tokens"
    if args.autoencoder_epochs:
        model_cfg["autoencoder"]["epochs"] = args.autoencoder_epochs
        family = build_family(model_cfg)
        images = results / "preprocessed"
        image = {part: [find_preprocessed(results, i) for i in ids[part]] for part in ids}
        start = time.perf_counter()
        family.fit_autoencoder(image["train"], image["test"], out / "models" / "autoencoder", progress=False)
        print(f"autoencoder\t{args.autoencoder_epochs}\t{time.perf_counter() - start:.0f}", flush=True)
        everyone = sorted(images.glob("*/anat/*_desc-preproc_T1w.nii.gz"))
        tokens = out / "latents" / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        family.encode(
            out / "models" / "autoencoder" / "model.pt",
            stages.image_map(everyone),
            tokens,
            augmented_copies=model_cfg.get("latents", {}).get("augmented_copies", 0),
            progress=False,
        )
        print(f"encode\t\t{time.perf_counter() - start:.0f}", flush=True)
    family = build_family(model_cfg)
    covariates = stages.covariates(
        results / "split" / "subjects.tsv", results / "volumes" / "real.tsv", model_cfg["conditioning"]
    )
    start = time.perf_counter()
    family.fit_prior(
        [tokens / f"{i}.npy" for i in ids["train"]],
        [tokens / f"{i}.npy" for i in ids["test"]],
        out / "models" / "prior" / "cohort",
        progress=False,
        covariates=covariates,
    )
    print(f"diffusion\t{args.diffusion_epochs}\t{time.perf_counter() - start:.0f}", flush=True)
    process = noise_process(model_cfg["diffusion"])
    spread = sample_spread(out, args.guidance_scale)
    print(f"# {process}, guidance {args.guidance_scale:g}: sample latent spread {spread:.3f} (training: 1)")


def sample_spread(out: Path, guidance_scale: float = 1.0, n: int = 8) -> float:
    """Standard deviation of ``n`` DDIM-50 samples' scaled latents (the training latents': 1), conditioned on
    the first ``n`` training subjects' covariates, guided by ``guidance_scale`` if trained for it."""
    unet, saved = load_diffusion(out / "models" / "prior" / "cohort" / "model.pt")
    covariates = saved["info"]["training_covariates"][:n].float()
    scheduler = make_scheduler("ddim", 50, saved["process"])
    generator = torch.Generator().manual_seed(0)
    shape = tuple(saved["latent_shape"])
    covariates, unconditioned = sampling_covariates(covariates, saved.get("condition_dropout", 0.0) > 0)
    latents = sample_latents(
        unet, scheduler, covariates, shape, generator, False, None, unconditioned, guidance_scale
    )
    return float(latents.std())


if __name__ == "__main__":
    main()

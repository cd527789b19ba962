"""Projection of a paper-scale run (GPU-hours, wall time, storage, SLURM jobs) from per-item costs.

Usage: python benchmarks/scaling.py          # prints the tables of docs/scaling.md

Every number used is in COSTS below, with how it was obtained: "measured" (a command, or a section of
BENCHMARKS.md), "paper" (a seed, see ../shared/seeds/README.md), "config" (a file of this repository) or
"assumed". Every GPU time is FLOPs / (assumed peak x assumed utilisation). One H100 has been measured since
(BENCHMARKS.md, "On a lent GPU"); docs/scaling.md says which of these assumptions it contradicts. Replace them
with the output of ``python benchmarks/gpu_fragment.py`` on a GPU of each tier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Per-item costs: (value, basis, where it comes from)
COSTS = {
    # FLOPs (matrix products and convolutions, batch 1, 160x224x160, 1,400 tokens)
    # measured: python benchmarks/paper_costs.py flops (BENCHMARKS.md, "Per-item costs at the paper's scale")
    "ae_step_flops": (1.469e14, "measured", "paper_costs.py flops: VQ-VAE + PatchGAN step, checkpointed"),
    "ae_forward_flops": (3.654e13, "measured", "paper_costs.py flops: encoder + decoder forward"),
    "encode_flops": (1.827e13, "measured", "paper_costs.py flops: encoder forward"),
    "decode_score_flops": (1.835e13, "measured", "paper_costs.py flops: decoder + PatchGAN forward"),
    "prior_step_flops": (2.451e11, "measured", "paper_costs.py flops: prior step per sequence"),
    "prior_forward_flops": (8.197e10, "measured", "paper_costs.py flops: prior forward per sequence"),
    "sample_ops_per_token": (1519, "measured", "paper_costs.py ops: GPU kernels per cached token step"),
    "vqvae_disc_params": (1.135e8, "measured", "paper_costs.py flops: VQ-VAE 110.7 M + PatchGAN 2.8 M"),
    "prior_params": (2.034e7, "measured", "paper_costs.py flops"),
    # GPUs: published dense bf16 tensor-core peaks, and what fraction of it the steps reach
    "peak_24gb": (125e12, "assumed", "NVIDIA A10 datasheet, bf16 dense"),
    "peak_40gb": (312e12, "assumed", "NVIDIA A100 40GB datasheet, bf16 dense"),
    "peak_80gb": (312e12, "assumed", "NVIDIA A100 80GB datasheet, bf16 dense"),
    "utilisation": (0.35, "assumed", "fraction of peak reached by 3D convolutions in bf16"),
    "launch_s": (5e-6, "assumed", "GPU time per aten op when sampling is bound by kernel launches"),
    # model.distributed.gpus: autoencoder training on the GPUs of one node (torchrun + DDP, one SLURM job)
    "gpus_per_node": (8, "assumed", "the most GPUs model.distributed.gpus can get (one node)"),
    "ddp_efficiency": (0.9, "assumed", "speed-up per GPU of DDP training against one GPU"),
    # CPU seconds per image at 1 mm, one thread, on a 2-core machine shared with other work (load 4-7):
    # upper bounds. measured: python benchmarks/paper_costs.py subject [--input-voxel-mm 1.0]
    "preprocess_s": (47.1, "measured", "paper_costs.py subject --input-voxel-mm 1.0 (N4, deepbet, affine)"),
    "segment_s": (98.1, "measured", "paper_costs.py subject: Atropos + partial volumes"),
    "normalise_s": (84.6, "measured", "paper_costs.py subject: SyNOnly 40/20/0, Jacobian, modulated GM"),
    # bytes per image, written by morphgen at 160x224x160 (paper_costs.py subject)
    "image_bytes": (7_545_911, "measured", "preprocessed T1, float32 .nii.gz"),
    "subject_extra_bytes": (247_807, "measured", "mask, QC PNG and TSV"),
    "token_bytes": (2_800, "measured", "1,400 int16 tokens per copy (.npy, + 128 B header per file)"),
    "segmentation_bytes": (24_143_466, "measured", "labels uint8 + GM/WM/CSF probabilities float32"),
    "normalised_bytes": (25_111_649, "measured", "Jacobian + modulated GM, float32"),
    # how the pipeline runs (config.yaml, configs/paper/*.yaml, profiles/slurm/config.yaml, workflow/rules)
    "subjects_per_job": (20, "config", "profiles/slurm: group-components preprocess"),
    "cpu_slots": (400, "assumed", "profiles/slurm: jobs 100 x cores 4, all running at once"),
    "sample_batch": (8, "config", "config.yaml model.sampling.batch_size (paper.yaml keeps it)"),
    "images_per_job": (50, "config", "config.yaml evaluation.images_per_job: segmentation and SyN jobs"),
}
V = {name: value for name, (value, _, _) in COSTS.items()}

TIERS = {"24 GB": "peak_24gb", "40 GB": "peak_40gb", "80 GB": "peak_80gb"}
AE_BATCH = {"24 GB": 3, "40 GB": 6, "80 GB": 14}  # configs/paper/gpu-*.yaml
PRIOR_BATCH = {"24 GB": 9, "40 GB": 15, "80 GB": 32}  # configs/paper/gpu-*.yaml
RUNTIME_H = {  # hours, the rules' runtime in workflow/rules/*.smk
    "train_autoencoder": 24, "encode": 6, "reconstruction": 1, "train_prior": 24, "generate": 12,
    "segment_real": 6, "normalise_real": 6, "segment_reconstructions": 6, "segment_synthetic": 6,
    "normalise_synthetic": 6,
}  # fmt: skip
AE_GPUS = 8  # model.distributed.gpus of the summary and growth tables
# rerun after a stop, they go on from their checkpoints (training: checkpoints/last.pt; generation: the
# scores, kept tokens and sampler state in samples/<subpop>/checkpoints/generate.pt)
RESUMES = {"train_autoencoder", "train_prior", "generate"}
# jobs that stages() does not list: check_inputs, split, qc_table, reconstruction_volumes, table1_fidelity,
# table2_volumes, memorisation, region_effects, vbm, loss_figure (one each); sample_grid (per sub-population).
# The gather_* rules that join batch tables run in the Snakemake process itself (localrules), not as jobs.
OTHER_JOBS, OTHER_JOBS_PER_SUBPOP = 10, 1


@dataclass
class Run:
    name: str
    n_train: int
    n_test: int
    subpops: list[int]  # training members of each sub-population's prior
    copies: int = 1  # token copies per subject (1 + model.latents.augmented_copies)
    ae_epochs: int = 300  # configs/paper/paper.yaml
    ae_train: int | None = None  # images the autoencoder learns from (default: the training split)
    ae_val: int | None = None  # images validated after every epoch (default: the test split)
    prior_epochs: int = 100  # configs/paper/paper.yaml
    n_keep: int = 1000  # configs/paper/paper.yaml
    oversample: int = 100  # seed 000, §3.2

    @property
    def n_all(self) -> int:
        return self.n_train + self.n_test


def ukb_like(n_train: int) -> Run:
    """UK Biobank's design (seed 000, app. 6.4): test split 3,970 per 31,740, four sub-populations that are
    each the first or last fifth of age or ventricle volume (configs/paper/paper.yaml)."""
    return Run(f"{n_train:,}", n_train, round(n_train * 3970 / 31740), [round(n_train / 5)] * 4)


UKB = ukb_like(31740)
UKB.name = "UK Biobank"
# ADNI (seed 000, app. 6.4): 648 training and 82 test subjects; priors for CN (118) and AD (151) training
# subjects, each encoded with 100 augmented copies. The autoencoder is the UK Biobank one, fine-tuned for at
# most 20 epochs on 80% of the training split, validated on the other 20% (config.yaml pretraining.finetune).
ADNI = Run("ADNI", 648, 82, [118, 151], copies=101, ae_epochs=20, ae_train=518, ae_val=130)


def gpu_hours(flops: float, tier: str) -> float:
    return flops / (V[TIERS[tier]] * V["utilisation"]) / 3600


def stages(run: Run, tier: str, ae_gpus: int = 1) -> list[dict]:
    """Per stage: GPU-hours (all jobs), CPU core-hours, number of jobs, hours of its longest single job.

    ``ae_gpus``: model.distributed.gpus, the GPUs of the one train_autoencoder job."""
    ae_train = run.ae_train if run.ae_train is not None else run.n_train
    ae_val = run.ae_val if run.ae_val is not None else run.n_test
    n_gen = run.n_keep * run.oversample
    s = len(run.subpops)
    ae = gpu_hours(run.ae_epochs * (ae_train * V["ae_step_flops"] + ae_val * V["ae_forward_flops"]), tier)
    ae = ae / (V["ddp_efficiency"] if ae_gpus > 1 else 1.0)
    prior = [gpu_hours(run.prior_epochs * n * run.copies * V["prior_step_flops"], tier) for n in run.subpops]
    # token sampling: the slower of arithmetic and kernel launches (one launch per aten op per token step)
    flop_h = gpu_hours(n_gen * V["prior_forward_flops"], tier)
    launch_h = math.ceil(n_gen / V["sample_batch"]) * 1400 * V["sample_ops_per_token"] * V["launch_s"] / 3600
    generate = max(flop_h, launch_h) + gpu_hours(n_gen * V["decode_score_flops"], tier)
    cpu = lambda n, key: n * V[key] / 3600  # noqa: E731
    per_job = V["images_per_job"]

    def batched(n_images: int, key: str, groups: int = 1) -> tuple:
        """CPU-h, jobs and longest job of a stage run in jobs of images_per_job images."""
        return (
            0,
            cpu(groups * n_images, key),
            groups * math.ceil(n_images / per_job),
            cpu(min(n_images, per_job), key),
        )

    rows = [
        ("preprocess", 0, cpu(run.n_all, "preprocess_s"), math.ceil(run.n_all / V["subjects_per_job"]), 0),
        ("train_autoencoder", ae, 0, 1, ae / ae_gpus),
        ("encode", gpu_hours(run.n_all * run.copies * V["encode_flops"], tier), 0, 1, None),
        ("reconstruction", gpu_hours(run.n_test * V["ae_forward_flops"], tier), 0, 1, None),
        ("train_prior", sum(prior), 0, s, max(prior)),
        ("generate", s * generate, 0, s, generate),
        ("segment_real", *batched(run.n_all, "segment_s")),
        ("normalise_real", *batched(run.n_all, "normalise_s")),
        ("segment_reconstructions", *batched(run.n_test, "segment_s")),
        ("segment_synthetic", *batched(run.n_keep, "segment_s", s)),
        ("normalise_synthetic", *batched(run.n_keep, "normalise_s", s)),
    ]
    job_hours = {"train_autoencoder": [ae / ae_gpus], "train_prior": prior, "generate": [generate] * s}
    out = []
    for name, gpu, cpu_h, jobs, longest in rows:
        longest = (gpu or cpu_h) if longest is None else longest
        if name in RESUMES:  # one more submission per runtime limit passed (resumed from its checkpoint)
            jobs = sum(math.ceil(h / RUNTIME_H[name]) for h in job_hours[name])
        out.append({"stage": name, "gpu_h": gpu, "cpu_h": cpu_h, "jobs": jobs, "longest_h": longest})
    return out


def total_jobs(run: Run, rows: list[dict]) -> int:
    return sum(r["jobs"] for r in rows) + OTHER_JOBS + OTHER_JOBS_PER_SUBPOP * len(run.subpops)


def storage_bytes(run: Run) -> dict[str, float]:
    per_subject = (
        V["image_bytes"] + V["subject_extra_bytes"] + V["segmentation_bytes"] + V["normalised_bytes"]
    )
    return {
        "real subjects": run.n_all * (per_subject + run.copies * V["token_bytes"] + 128),
        "test reconstructions": run.n_test * (V["image_bytes"] + V["segmentation_bytes"]),
        "kept samples": len(run.subpops)
        * run.n_keep
        * (V["image_bytes"] + V["segmentation_bytes"] + V["normalised_bytes"]),
        # model.pt (weights) + checkpoints/last.pt (weights + two Adam moments), float32
        "models": 16 * (V["vqvae_disc_params"] + len(run.subpops) * V["prior_params"]),
    }


def wall_hours(run: Run, tier: str, gpus: int) -> dict[str, float]:
    """Hours on ``gpus`` GPUs as the pipeline runs today, and a lower bound if every stage were split evenly.

    Today train_autoencoder gets the GPUs of one node (model.distributed.gpus), every other GPU job one GPU,
    and only the sub-populations' jobs run side by side; segmentation and SyN run in jobs of images_per_job
    images on the CPU slots, those of the real images beside the GPU stages. The lower bound spreads all GPU
    work over ``gpus`` and all CPU work over the CPU slots.
    """
    ae_gpus = min(gpus, int(V["gpus_per_node"]))
    by = {row["stage"]: row for row in stages(run, tier, ae_gpus)}
    waves = math.ceil(len(run.subpops) / gpus)
    pre = by["preprocess"]["cpu_h"] / V["cpu_slots"]

    def on_slots(stage: str) -> float:  # its jobs spread over the CPU slots, no shorter than its longest job
        return max(by[stage]["longest_h"], by[stage]["cpu_h"] / V["cpu_slots"])

    gpu_path = (
        by["train_autoencoder"]["longest_h"]
        + max(by["encode"]["longest_h"], by["reconstruction"]["longest_h"])
        + waves * (by["train_prior"]["longest_h"] + by["generate"]["longest_h"])
        + on_slots("segment_synthetic")
        + on_slots("normalise_synthetic")
    )
    cpu_path = on_slots("segment_real") + on_slots("normalise_real")
    gpu_total = sum(row["gpu_h"] for row in by.values())
    cpu_total = sum(row["cpu_h"] for row in by.values())
    return {
        "gpu_path": pre + gpu_path,
        "cpu_path": pre + cpu_path,
        "wall": pre + max(gpu_path, cpu_path),
        "bound": gpu_total / gpus + cpu_total / V["cpu_slots"],
    }


def fmt_h(hours: float) -> str:
    if hours >= 48:
        return f"{hours:,.0f} h ({hours / 24:,.0f} d)"
    return f"{hours:,.1f} h"


def fmt_gpu(hours: float) -> str:
    return f"{hours:,.1f}" if hours >= 0.05 else "< 0.1"


def table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    right = ["---" if i in left else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def costs_table() -> str:
    rows = [[f"`{k}`", f"{v:.4g}", basis, src] for k, (v, basis, src) in COSTS.items()]
    return table(["item", "value", "basis", "source"], rows, left=(0, 2, 3))


def step_table() -> str:
    """Projected seconds per training step at each tier's batch, and per kept sample."""
    rows = []
    for tier, key in TIERS.items():
        rate = V[key] * V["utilisation"]
        per_draw = (
            1400 * V["sample_ops_per_token"] * V["launch_s"] / V["sample_batch"]
            + V["decode_score_flops"] / rate
        )
        rows.append(
            [
                tier,
                f"{AE_BATCH[tier]}: {AE_BATCH[tier] * V['ae_step_flops'] / rate:.1f} s",
                f"{PRIOR_BATCH[tier]}: {PRIOR_BATCH[tier] * V['prior_step_flops'] / rate:.3f} s",
                f"{100 * per_draw:.0f} s",
            ]
        )
    header = ["tier", "VQ-VAE step (batch: s)", "prior step (batch: s)", "per kept sample (100 drawn)"]
    return table(header, rows)


def stage_table(run: Run) -> str:
    rows = []
    by_tier = {tier: stages(run, tier) for tier in TIERS}
    for i, row in enumerate(by_tier["40 GB"]):
        name = row["stage"]
        gpu = " / ".join(fmt_gpu(by_tier[t][i]["gpu_h"]) for t in TIERS) if row["gpu_h"] else ""
        cpu = f"{row['cpu_h']:,.0f}" if row["cpu_h"] else ""
        limit = RUNTIME_H.get(name)
        longest = row["longest_h"]
        note = ""
        if limit and longest > limit:
            note = "resumes after each stop" if name in RESUMES else "**over the limit**"
        longest_s = f"{fmt_h(longest)} (limit {limit} h{', ' + note if note else ''})" if limit else ""
        rows.append([name, gpu, cpu, f"{row['jobs']:,}", longest_s])
    return table(["stage", "GPU-h 24 / 40 / 80 GB", "CPU core-h", "SLURM jobs", "longest job, 40 GB"], rows)


def summary_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        per_tier = {t: stages(run, t, AE_GPUS) for t in TIERS}
        gpu = " / ".join(f"{sum(r['gpu_h'] for r in per_tier[t]):,.0f}" for t in TIERS)
        cpu = sum(r["cpu_h"] for r in per_tier["40 GB"])
        w8, w64 = wall_hours(run, "40 GB", 8), wall_hours(run, "40 GB", 64)
        store = sum(storage_bytes(run).values()) / 1e12
        rows.append(
            [
                run.name,
                f"{run.n_train:,} + {run.n_test:,}",
                gpu,
                f"{cpu:,.0f}",
                f"{fmt_h(w8['gpu_path'])} / {fmt_h(w64['gpu_path'])}",
                fmt_h(w8["cpu_path"]),
                f"{fmt_h(w8['bound'])} / {fmt_h(w64['bound'])}",
                f"{store:,.2f} TB",
                f"{total_jobs(run, per_tier['40 GB']):,}",
            ]
        )
    header = [
        "run", "subjects (train + test)", "GPU-h 24 / 40 / 80 GB", "CPU core-h", "GPU path, 8 / 64 GPUs",
        "CPU path", "if split evenly, 8 / 64 GPUs", "storage", "SLURM jobs",
    ]  # fmt: skip
    return table(header, rows)


def storage_table(runs: list[Run]) -> str:
    rows = []
    for run in runs:
        parts = storage_bytes(run)
        rows.append([run.name] + [f"{v / 1e9:,.1f} GB" for v in parts.values()])
        rows[-1].append(f"{sum(parts.values()) / 1e12:,.2f} TB")
    return table(["run", *storage_bytes(UKB), "total"], rows)


def growth_table(sizes: list[int]) -> str:
    rows = []
    for n in sizes:
        run = ukb_like(n)
        by = {r["stage"]: r for r in stages(run, "40 GB", AE_GPUS)}
        total = sum(r["gpu_h"] for r in by.values())
        share = {
            k: by[k]["gpu_h"] / total for k in ("train_autoencoder", "generate", "train_prior", "encode")
        }
        cpu = sum(r["cpu_h"] for r in by.values())
        top = max(share, key=share.get)
        top_cpu = max(by.values(), key=lambda r: r["cpu_h"])["stage"]
        w8 = wall_hours(run, "40 GB", 8)
        jobs = total_jobs(run, list(by.values()))
        rows.append(
            [
                f"{n:,}",
                f"{total:,.0f}",
                " / ".join(f"{100 * share[k]:.0f}%" for k in share),
                f"{cpu:,.0f}",
                f"{fmt_h(w8['gpu_path'])} / {fmt_h(w8['cpu_path'])}",
                f"{sum(storage_bytes(run).values()) / 1e12:,.2f} TB",
                f"{jobs:,}",
                top,
                top_cpu,
            ]
        )
    header = [
        "training subjects", "GPU-h (40 GB)", "share: autoencoder / generate / priors / encode", "CPU core-h",
        "GPU / CPU path, 8 GPUs", "storage", "SLURM jobs", "largest GPU stage", "largest CPU stage",
    ]  # fmt: skip
    return table(header, rows)


def main() -> None:
    print("## Per-item costs\n")
    print(costs_table())
    print("\n## Per step and per kept sample, projected\n")
    print(step_table())
    for run in (UKB, ADNI):
        print(f"\n## {run.name}: per stage (GPU-hours on a 24 / 40 / 80 GB GPU)\n")
        print(stage_table(run))
    print("\n## Summary\n")
    print(summary_table([UKB, ADNI]))
    print("\n## Storage\n")
    print(storage_table([UKB, ADNI]))
    steps = ", ".join(f"{math.ceil(UKB.n_train / b):,} at batch {b} ({t})" for t, b in AE_BATCH.items())
    print(f"\nUK Biobank autoencoder steps per epoch: {steps}.")
    print("\n## As the cohort grows (UK Biobank's design)\n")
    print(growth_table([1000, 10000, 31740, 100000]))


if __name__ == "__main__":
    main()

"""Every family run on the same cohort, side by side: one row per run (``tables/run_summary.tsv`` of each), so
that seeds 000-004 are judged by the same numbers.

A run's summary holds what decides whether a model keeps the anatomy: whether its autoencoder carries each
tissue (reconstructed against real volumes: r, slope, verdict; tissue Dice, MS-SSIM, log bMMD² and the
voxels of the reconstructions' VBM against their originals), whether its samples keep the designed
effects (real and synthetic Cohen's d of each contrast for the ventricles), the image metrics of Table 1
(averaged over sub-populations), the samples flagged by the memorisation audit, and the time of its model
rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from morphgen.tsv import read_tsv

SUMMARY_TSV = "run_summary.tsv"
MODEL_RULES = ("train_autoencoder", "train_prior", "generate")
TISSUES = ("ventricles", "brain", "gm", "wm", "csf")


def _read(path: Path) -> pd.DataFrame | None:
    return read_tsv(path) if Path(path).exists() else None


def _seconds(benchmarks: Path, rule: str) -> float:
    """Wall time of every job of ``rule`` (Snakemake's benchmark files, column ``s``), summed."""
    files = sorted((Path(benchmarks) / rule).glob("*.tsv"))
    return float(sum(read_tsv(f)["s"].sum() for f in files)) if files else float("nan")


def run_summary(results: str | Path, family: str, effect_tissue: str = "ventricles") -> dict:
    """One run's row, from its own tables (what a run did not write is NaN)."""
    results = Path(results)
    tables = results / "tables"
    row: dict = {"family": family, "results": str(results)}
    reconstruction = _read(tables / "reconstruction_volumes.tsv")
    if reconstruction is not None:
        by_tissue = reconstruction.set_index("tissue")
        for tissue in TISSUES:
            if tissue in by_tissue.index:
                row[f"recon_{tissue}_r"] = float(by_tissue.loc[tissue, "pearson_r"])
                row[f"recon_{tissue}_slope"] = float(by_tissue.loc[tissue, "slope"])
                if "verdict" in by_tissue.columns:
                    row[f"recon_{tissue}_verdict"] = by_tissue.loc[tissue, "verdict"]
    dice = _read(tables / "reconstruction_dice.tsv")
    if dice is not None and "subject" in dice.columns:
        mean = dice[dice["subject"].astype(str) == "mean"]
        for column in (c for c in dice.columns if c.startswith("dice_")):
            row[f"recon_{column}"] = float(mean[column].iloc[0]) if len(mean) else float("nan")
    fidelity = _read(tables / "reconstruction_fidelity.tsv")
    if fidelity is not None and len(fidelity):
        for column in ("msssim_mean", "log_bmmd2"):
            if column in fidelity.columns:
                row[f"recon_{column}"] = float(fidelity[column].iloc[0])
    vbm = _read(tables / "reconstruction_vbm.tsv")
    if vbm is not None and len(vbm):
        for column in ("significant_voxels", "bonferroni_voxels"):
            if column in vbm.columns:
                row[f"recon_vbm_{column}"] = int(vbm[column].iloc[0])
    effects = _read(tables / "subgroup_effects.tsv")
    if effects is not None:
        for _, e in effects[effects["tissue"] == effect_tissue].iterrows():
            row[f"{e['contrast']}_real_d"] = float(e["real_d"])
            row[f"{e['contrast']}_synthetic_d"] = float(e["synthetic_d"])
    fidelity = _read(tables / "table1_fidelity.tsv")
    if fidelity is not None and "source" in fidelity.columns:
        synthetic = fidelity[fidelity["source"] == "synthetic"]
        for column in synthetic.columns:
            wanted = column.endswith("_mean") or column.startswith("fid")  # not sds, counts, settings
            if wanted and pd.api.types.is_numeric_dtype(synthetic[column]):
                row[f"synthetic_{column}"] = float(synthetic[column].mean())
    memorisation = _read(tables / "memorisation_summary.tsv")
    if memorisation is not None and "n_flagged" in memorisation.columns:
        row["memorised_samples"] = int(memorisation["n_flagged"].sum())
    for rule in MODEL_RULES:
        row[f"{rule}_s"] = _seconds(results / "benchmarks", rule)
    return row


def family_comparison(summaries: Sequence[Path | str]) -> pd.DataFrame:
    """The rows of every ``run_summary.tsv`` given that exists, in order; columns in first-seen order.

    ``results`` is the folder each summary was read from, made absolute: runs in two working copies both
    write the configured ``results: results``, and they are two runs, not one.
    """
    frames = [
        read_tsv(p).assign(results=str(p.resolve().parent.parent)) for p in map(Path, summaries) if p.exists()
    ]
    if not frames:
        return pd.DataFrame(columns=["family", "results"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    return table.drop_duplicates("results", keep="first").reset_index(drop=True)


def comparison_sources(own: Path, others: Mapping[str, str] | Sequence[str] | None) -> list[Path]:
    """This run's summary, then those of ``evaluation.compare_runs`` (results folders of other runs)."""
    folders = list(others.values()) if isinstance(others, Mapping) else list(others or [])
    return [Path(own), *(Path(folder) / "tables" / SUMMARY_TSV for folder in folders)]


def missing_runs(sources: Sequence[Path]) -> list[str]:
    return [str(p.parent.parent) for p in sources[1:] if not p.exists()]

"""One function per pipeline stage: what a Snakemake rule script calls, testable without Snakemake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from morphgen.errors import ConfigError
from morphgen.tsv import read_tsv, write_tsv


def read_input_subjects(input_cfg: dict, sheet_path: str | Path) -> pd.DataFrame:
    """Subjects (participant_id, path, covariates) from the configured source; the demo reads as BIDS."""
    from morphgen.cohort.sheet import read_subjects

    if input_cfg["source"] == "demo":
        input_cfg = dict(input_cfg, source="bids", bids_dir=str(Path(sheet_path).parent))
    return read_subjects(input_cfg)


def check_inputs(
    input_cfg: dict, subpop_cfg: dict, sheet_path: str | Path, out_qc: str | Path
) -> pd.DataFrame:
    """Input QC table: every subject ok or excluded with a reason (fails fast when on_error is 'fail')."""
    from morphgen.cohort.sheet import required_covariates
    from morphgen.cohort.validate import check_subjects

    subjects = read_input_subjects(input_cfg, sheet_path)
    manual = input_cfg.get("exclude") or {}
    keep = subjects[~subjects["participant_id"].isin(manual)]
    qc = check_subjects(keep, required_covariates(subpop_cfg), input_cfg["on_error"])
    manual_rows = pd.DataFrame(
        {
            "participant_id": list(manual),
            "path": [subjects.set_index("participant_id")["path"].get(s, "") for s in manual],
            "status": "excluded",
            "reason": [f"excluded in config: {why}" for why in manual.values()],
        }
    )
    qc = pd.concat([qc, manual_rows], ignore_index=True) if len(manual_rows) else qc
    write_tsv(qc, out_qc)
    return qc


def usable_subjects(input_cfg: dict, sheet_path, qc_path) -> pd.DataFrame:
    """The sheet's subjects that passed the input checks (status ok in the QC table)."""
    subjects = read_input_subjects(input_cfg, sheet_path)
    qc = read_tsv(qc_path)
    ok = set(qc.loc[qc["status"] == "ok", "participant_id"])
    return subjects[subjects["participant_id"].isin(ok)]


def split(input_cfg: dict, split_cfg: dict, subpop_cfg: dict, sheet_path, qc_path, out_subjects, out_subpops):
    """Usable subjects with split and sub-populations, and one TSV per sub-population."""
    from morphgen.split import make_split, members

    table = make_split(usable_subjects(input_cfg, sheet_path, qc_path), split_cfg, subpop_cfg)
    write_tsv(table, out_subjects)
    for path in out_subpops:
        subpop = Path(path).name.removesuffix(".tsv")
        cov = subpop_cfg[subpop.split("-", 1)[0]]["covariate"]
        write_tsv(members(table, subpop)[["participant_id", "split", cov]], path)
    return table


def image_map(paths: str | Path | list[str]) -> dict[str, Path]:
    """Subject (or sample) id -> image path, the id being the file name up to the first '_' or '.'.

    A folder among ``paths`` stands for the ``*.nii.gz`` files in it (a rule's ``directory()`` output).
    """
    files = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        files += sorted(Path(p).glob("*.nii.gz")) if Path(p).is_dir() else [Path(p)]
    out = {}
    for p in files:
        name = Path(p).name
        out[name.split("_")[0].split(".nii")[0]] = Path(p)
    return out


def clear_stale_checkpoints(out_dir: Path, params: dict) -> None:
    """Drop checkpoints of a run with other settings, so a rerun resumes only what it would recompute."""
    import json

    ckpt_dir = out_dir / "checkpoints"
    stamp = ckpt_dir / "settings.json"
    text = json.dumps(params, sort_keys=True, default=str)
    if ckpt_dir.exists() and (not stamp.exists() or stamp.read_text() != text):
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)


def finish_training(out_dir: Path) -> None:
    """Training is complete: its resume state is no longer needed, and a forced rerun starts afresh."""
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)


def subpop_of(path: str | Path) -> str:
    """Sub-population name of a members TSV or a sample folder file."""
    p = Path(path)
    return p.name.removesuffix(".tsv") if p.suffix == ".tsv" else p.parent.name


def fidelity_inputs(
    subpops: list[str], member_tsvs: list[str], real_paths: list[str], synth_paths: list[str]
):
    """Real and synthetic image stacks per sub-population, for Table 1."""
    from morphgen.metrics.fidelity import stack_volumes
    from morphgen.report.tables import read_members

    real_by_id = image_map(real_paths)
    real, synthetic = {}, {}
    for tsv in member_tsvs:
        ids = read_members(tsv)
        real[subpop_of(tsv)] = stack_volumes([real_by_id[s] for s in ids], ids)
    for subpop in subpops:
        paths = sorted(Path(p) for p in synth_paths if Path(p).parent.name == subpop)
        synthetic[subpop] = stack_volumes(paths, [p.name.split(".nii")[0] for p in paths])
    return real, synthetic


def volume_tables(
    subpops, member_tsvs, real_tsv, synth_tsvs, alpha, out_table, out_effects, out_figure, subpop_cfg=None
):
    """Table 2 (real vs synthetic volumes per sub-population), the sub-group effects table and its figure."""
    from morphgen.report.figures import volume_distributions
    from morphgen.report.tables import read_members, subgroup_effects, table2_volumes

    real = read_tsv(real_tsv)
    synthetic = {subpop_of(p): read_tsv(p) for p in synth_tsvs}
    members = {subpop_of(p): read_members(p) for p in member_tsvs}
    members = {s: members[s] for s in subpops}
    contrasts = None
    if subpop_cfg:
        contrasts = [(f"{k}-{e['names'][1]}", f"{k}-{e['names'][0]}") for k, e in subpop_cfg.items()]
    table2_volumes(real, synthetic, members, alpha, out_tsv=out_table)
    subgroup_effects(real, synthetic, members, contrasts, out_tsv=out_effects)
    volume_distributions(real, synthetic, members, out_figure)


def pretraining_split(input_cfg: dict, fraction: float, seed: int, sheet_path, qc_path, out_subjects):
    """Usable subjects of the pre-training cohort, ``train`` or ``val`` (its validation loss)."""
    from morphgen.split import assign_split

    table = usable_subjects(input_cfg, sheet_path, qc_path).copy()
    if len(table) < 2:
        raise ConfigError(f"the pre-training cohort has {len(table)} usable subjects; it needs at least 2")
    labels = assign_split(list(table["participant_id"]), fraction, seed)
    table["split"] = table["participant_id"].map(labels.replace({"test": "val"}))
    write_tsv(table[["participant_id", "path", "split"]], out_subjects)
    return table


def finetune_validation(train_ids: list[str], fraction: float, seed: int) -> list[str]:
    """Training subjects held out from fine-tuning to stop it early (they still train the priors)."""
    from morphgen.split import assign_split

    labels = assign_split(list(train_ids), fraction, seed)
    return sorted(labels.index[labels == "test"])

"""A user's own subject sheet against the configuration: checked before anything runs, and a starting
configuration written from it (``morphgen init-config``)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from morphgen.cohort.sheet import (
    ID_COLUMNS,
    PATH_COLUMN,
    _config_path,
    _participants,
    _read_table,
    read_sheet,
)
from morphgen.errors import ConfigError

# columns that describe the file or the visit, never a covariate to split on
NOT_COVARIATES = {*ID_COLUMNS, PATH_COLUMN, "session", "session_id", "acq_time"}
# a numeric column with fewer distinct values is treated as a category (e.g. sex coded 0/1)
MIN_CONTINUOUS_VALUES = 6
MAX_LEVELS = 12
INIT_COMMAND = "morphgen init-config"


def covariate_table(input_cfg: dict, base_dir: str | Path = ".") -> tuple[pd.DataFrame, str]:
    """The covariates of a BIDS folder or sheet (no image is opened), and the file they come from.

    For BIDS: ``participants.tsv`` joined with the first session's row of each ``sub-*_sessions.tsv``.
    """
    source = input_cfg.get("source")
    path = _config_path(input_cfg, "bids_dir" if source == "bids" else "sheet", Path(base_dir))
    if source == "sheet":
        return read_sheet(path), str(path)
    if not path.is_dir():
        raise ConfigError(f"input.bids_dir: BIDS folder not found: {path}")
    table = _participants(path)
    if table is None:
        raise ConfigError(
            f"input.bids_dir: {path} has no participants.tsv, so its subjects have no covariates for the "
            "sub-populations; add one (participant_id and a column per covariate)"
        )
    sessions = []
    for sessions_tsv in sorted(path.glob("sub-*/sub-*_sessions.tsv")):
        rows = _read_table(sessions_tsv)
        if len(rows):
            sessions.append(
                rows.sort_values(rows.columns[0]).iloc[[0]].assign(participant_id=sessions_tsv.parent.name)
            )
    if sessions:
        extra = pd.concat(sessions, ignore_index=True)
        table = table.merge(
            extra.drop(columns=[c for c in table.columns if c in extra and c != "participant_id"]),
            on="participant_id",
            how="left",
        )
    return table, str(path / "participants.tsv")


def check_sheet_against_subpopulations(input_cfg: dict, subpop_cfg: dict, base_dir: str | Path = ".") -> None:
    """Raise :class:`ConfigError` naming the key to edit when a sub-population's covariate is not a column of
    the subjects' sheet, or a categorical level never occurs in it. The demo cohort is made to fit."""
    if input_cfg.get("source") == "demo":
        return
    table, where = covariate_table(input_cfg, base_dir)
    columns = [c for c in table.columns if c not in NOT_COVARIATES]
    problems = []
    for key, entry in subpop_cfg.items():
        covariate = entry["covariate"]
        if covariate not in table.columns:
            problems.append(
                f"subpopulations.{key}.covariate is {covariate!r}, which is not a column of {where}"
            )
            continue
        if "levels" in entry:
            present = set(table[covariate].dropna().astype(str))
            missing = [str(level) for level in entry["levels"] if str(level) not in present]
            if missing:
                values = ", ".join(sorted(present)[:MAX_LEVELS]) or "none"
                problems.append(
                    f"subpopulations.{key}.levels: {', '.join(map(repr, missing))} never occurs in column "
                    f"{covariate!r} of {where} (its values: {values})"
                )
    if problems:
        raise ConfigError(
            "the configured sub-populations do not fit the subjects' sheet:\n  - "
            + "\n  - ".join(problems)
            + f"\nIts covariate columns: {', '.join(columns) or 'none'}. Edit subpopulations in your config, "
            f"or write a starting config from the sheet: {INIT_COMMAND} "
            + (
                f"--bids {input_cfg['bids_dir']}"
                if input_cfg.get("source") == "bids"
                else f"--sheet {input_cfg['sheet']}"
            )
        )


def _name(value: object) -> str:
    """A sub-population name from a level: letters and digits only, lower case."""
    return re.sub(r"[^A-Za-z0-9]", "", str(value)).lower() or "level"


def describe_covariates(table: pd.DataFrame) -> list[dict]:
    """One entry per covariate column: its kind (continuous or categorical), how many subjects have it, and
    its range or its levels with their counts; columns with a value per subject (free text) are left out."""
    out = []
    for column in table.columns:
        if column in NOT_COVARIATES:
            continue
        values = table[column].dropna()
        if values.empty:
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and values.nunique() >= MIN_CONTINUOUS_VALUES:
            out.append(
                {
                    "column": column,
                    "kind": "continuous",
                    "n": len(values),
                    "min": float(numeric.min()),
                    "max": float(numeric.max()),
                }
            )
            continue
        counts = values.astype(str).value_counts()
        if 2 <= len(counts) <= MAX_LEVELS and len(counts) < len(values):  # not a value per subject
            out.append(
                {"column": column, "kind": "categorical", "n": len(values), "levels": counts.to_dict()}
            )
    return out


def propose_subpopulations(covariates: list[dict]) -> dict:
    """Sub-populations from the covariates: first vs last tercile of each continuous one ("young"/"old" for
    age), and the two most frequent levels of each categorical one."""
    out = {}
    for entry in covariates:
        column = entry["column"]
        key = _name(column)
        if entry["kind"] == "continuous":
            names = ["young", "old"] if key == "age" else ["low", "high"]
            out[key] = {"covariate": column, "quantiles": 3, "names": names}
        else:
            levels = list(entry["levels"])[:2]
            names = [_name(level) for level in levels]
            if names[0] == names[1]:
                names = [f"{names[0]}1", f"{names[1]}2"]
            out[key] = {"covariate": column, "levels": levels, "names": names}
    return out


def starter_config(input_cfg: dict, base_dir: str | Path = ".") -> str:
    """YAML text of a configuration for a BIDS folder or sheet, to use on top of config.yaml: its input
    section, its covariate columns listed, and sub-populations proposed from them."""
    import yaml

    table, where = covariate_table(input_cfg, base_dir)
    covariates = describe_covariates(table)
    proposed = propose_subpopulations(covariates)
    lines = [
        f"# morphgen configuration for {where} ({len(table)} subjects), written by {INIT_COMMAND}.",
        "# Use it on top of the defaults:",
        "#   snakemake --cores N --configfile config.yaml THIS_FILE -- preprocess",
        "# Covariate columns found:",
    ]
    for entry in covariates:
        if entry["kind"] == "continuous":
            detail = f"continuous, {entry['min']:g} to {entry['max']:g}"
        else:
            detail = "categorical: " + ", ".join(f"{level} ({n})" for level, n in entry["levels"].items())
        lines.append(f"#   {entry['column']}: {entry['n']} subjects, {detail}")
    if not covariates:
        lines.append("#   none: add covariate columns to the sheet to form sub-populations")
    lines.append("# Each sub-population below gets its own prior; keep the ones your study compares.")
    body = {"input": {**{k: v for k, v in input_cfg.items() if v is not None}, "on_error": "exclude"}}
    if proposed:
        body["subpopulations"] = proposed
    return (
        "\n".join(lines)
        + "\n"
        + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, default_flow_style=None)
    )

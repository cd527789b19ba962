"""The list of subjects, their T1w files and covariates, read from a BIDS folder or from a TSV/CSV sheet."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from morphgen.errors import ConfigError

ID_COLUMNS = ("participant_id", "subject", "subject_id", "id")
PATH_COLUMN = "path"
DEMO_FOLDER = "demo_cohort"
# Missing-value spellings: BIDS writes n/a; pandas' defaults add NA, NaN, empty cells and the like.
NA_VALUES = ["n/a", "N/A"]


def demo_bids_dir(results_dir: str | Path) -> Path:
    """The folder the pipeline writes the simulated demo cohort to: ``<results>/demo_cohort``."""
    return Path(results_dir) / DEMO_FOLDER


def read_subjects(input_cfg: dict, base_dir: str | Path = ".") -> pd.DataFrame:
    """Subjects of ``config['input']``: columns participant_id, path (absolute), [session], covariates.

    ``source: bids`` reads ``bids_dir`` (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` and ``participants.tsv``);
    ``source: sheet`` reads a TSV or CSV with an id column (participant_id, subject, subject_id or id) and a
    ``path`` column (relative to the sheet's folder unless absolute). Relative config paths are taken from
    ``base_dir``. ``source: demo`` is resolved by the caller, which passes ``bids`` with
    :func:`demo_bids_dir`.
    Raises :class:`ConfigError` for problems with the sheet as a whole.
    """
    source = input_cfg.get("source")
    base = Path(base_dir)
    if source == "bids":
        return read_bids(_config_path(input_cfg, "bids_dir", base))
    if source == "sheet":
        return read_sheet(_config_path(input_cfg, "sheet", base))
    if source == "demo":
        raise ConfigError(
            "input.source 'demo': the demo cohort is made by the pipeline; read it as source 'bids' "
            "from demo_bids_dir(results)"
        )
    raise ConfigError(f"input.source must be one of bids, sheet, demo; got {source!r}")


def _config_path(input_cfg: dict, key: str, base: Path) -> Path:
    value = input_cfg.get(key)
    if not value:
        raise ConfigError(f"input.{key} must be set when input.source is {input_cfg.get('source')!r}")
    # absolute but not resolved: a user's paths (a DataLad dataset's symlinks) stay as given in messages
    return Path(os.path.abspath(base / Path(value).expanduser()))


# ------------------------------------------------------------------------------------------------ sheet


def read_sheet(sheet: str | Path) -> pd.DataFrame:
    """Subjects of a TSV (.tsv, .txt) or CSV (.csv) sheet; see :func:`read_subjects`."""
    sheet = Path(sheet)
    if not sheet.is_file():
        raise ConfigError(f"subject sheet not found: {sheet}")
    table = _read_table(sheet)
    id_column = next((c for c in ID_COLUMNS if c in table.columns), None)
    if id_column is None:
        raise ConfigError(
            f"subject sheet {sheet} has no id column (one of {', '.join(ID_COLUMNS)}); "
            f"its columns are: {', '.join(map(str, table.columns))}"
        )
    if PATH_COLUMN not in table.columns:
        raise ConfigError(
            f"subject sheet {sheet} has no '{PATH_COLUMN}' column for the T1w files; "
            f"its columns are: {', '.join(map(str, table.columns))}"
        )
    table = table.rename(columns={id_column: "participant_id"})
    ids = table["participant_id"].str.strip()
    blank = [i + 2 for i, v in enumerate(ids) if pd.isna(v) or v == ""]  # +2: header line, 1-based
    if blank:
        raise ConfigError(f"subject sheet {sheet}: rows with no participant id on lines {blank}")
    table["participant_id"] = ids
    table[PATH_COLUMN] = [_resolve(p, sheet.parent) for p in table[PATH_COLUMN]]
    _raise_on_duplicates(table, f"subject sheet {sheet}")
    covariates = [c for c in table.columns if c not in ("participant_id", PATH_COLUMN)]
    return table[["participant_id", PATH_COLUMN, *covariates]].reset_index(drop=True)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        sep = "\t"
    elif suffix == ".csv":
        sep = ","
    else:
        raise ConfigError(f"subject sheet {path}: expected a .tsv or .csv file")
    try:
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        as_text = {c: str for c in header if c in ID_COLUMNS or c in (PATH_COLUMN, "session_id")}
        table = pd.read_csv(path, sep=sep, dtype=as_text, na_values=NA_VALUES)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"subject sheet {path} cannot be read as a {'TSV' if sep == chr(9) else 'CSV'}: {exc}"
        ) from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _resolve(value: object, folder: Path) -> str:
    if pd.isna(value) or str(value).strip() == "":
        return ""  # reported per subject by the input checks
    return os.path.abspath(folder / Path(str(value).strip()).expanduser())


def _raise_on_duplicates(table: pd.DataFrame, where: str) -> None:
    dup = table[table["participant_id"].duplicated(keep=False)]
    if dup.empty:
        return
    lines = []
    for sid, rows in dup.groupby("participant_id", sort=True):
        files = ", ".join(str(p) for p in rows[PATH_COLUMN]) if PATH_COLUMN in rows else f"{len(rows)} rows"
        lines.append(f"  {sid}: {files}")
    raise ConfigError(f"{where}: duplicate participant ids:\n" + "\n".join(lines))


# ------------------------------------------------------------------------------------------------- BIDS


def read_bids(bids_dir: str | Path) -> pd.DataFrame:
    """Subjects of a BIDS folder; see :func:`read_subjects`.

    With several sessions the first (sorted) session that has a T1w image is used and recorded in a
    ``session`` column; columns of ``sub-X/sub-X_sessions.tsv`` for that session override participants.tsv.
    With several T1w images in one session the first (sorted) is used, with a warning.
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise ConfigError(f"BIDS folder not found: {bids_dir}")
    images, no_image = _bids_images(bids_dir)
    if not images:
        raise ConfigError(f"BIDS folder {bids_dir} has no sub-*/[ses-*/]anat/*_T1w.nii[.gz] images")
    participants = _participants(bids_dir)
    if participants is not None:
        no_image = sorted(
            set(no_image) | (set(participants["participant_id"]) - {row["participant_id"] for row in images})
        )
    if no_image:
        # kept with no path: the input checks give each one an excluded row of qc/inputs.tsv
        warnings.warn(
            f"{len(no_image)} participant(s) of {bids_dir} have no T1w image (each is excluded in the input "
            "QC table): " + ", ".join(no_image),
            stacklevel=2,
        )
        images += [{"participant_id": sid, PATH_COLUMN: "", "session": ""} for sid in no_image]
    found = pd.DataFrame(images).sort_values("participant_id", kind="stable")
    if participants is None:
        warnings.warn(
            f"BIDS folder {bids_dir} has no participants.tsv: subjects have no covariates", stacklevel=2
        )
        table = found
    else:
        no_row = sorted(set(found["participant_id"]) - set(participants["participant_id"]))
        if no_row:
            warnings.warn(
                f"{len(no_row)} subject(s) with a T1w image have no row in {bids_dir}/participants.tsv, kept "
                f"with missing covariates: {', '.join(no_row)}",
                stacklevel=2,
            )
        table = found.merge(participants, on="participant_id", how="left")
    if "session" in table.columns:
        table = _merge_sessions(table, bids_dir)
        if table["session"].eq("").all():
            table = table.drop(columns="session")
    return table.reset_index(drop=True)


def _t1w_files(anat: Path) -> list[Path]:
    files = [p for p in anat.glob("*_T1w.nii*") if p.name.endswith((".nii", ".nii.gz")) and p.is_file()]
    return sorted(p for p in files if not p.name.startswith("."))


def _bids_images(bids_dir: Path) -> tuple[list[dict], list[str]]:
    """One row per subject with a T1w image, and the subjects whose folder has none."""
    rows, no_image = [], []
    for subject_dir in sorted(p for p in bids_dir.glob("sub-*") if p.is_dir()):
        sid = subject_dir.name
        sessions = sorted(p for p in subject_dir.glob("ses-*") if p.is_dir())
        candidates = [(s.name, _t1w_files(s / "anat")) for s in sessions]
        candidates.append(("", _t1w_files(subject_dir / "anat")))
        session, files = next(((s, f) for s, f in candidates if f), ("", []))
        if not files:
            no_image.append(sid)
            continue
        if len(files) > 1:
            warnings.warn(
                f"subject {sid!r} has {len(files)} T1w images{' in ' + session if session else ''}; using "
                f"{files[0]} (ignored: {', '.join(str(f) for f in files[1:])})",
                stacklevel=3,
            )
        rows.append({"participant_id": sid, PATH_COLUMN: os.path.abspath(files[0]), "session": session})
    return rows, no_image


def _participants(bids_dir: Path) -> pd.DataFrame | None:
    path = bids_dir / "participants.tsv"
    if not path.is_file():
        return None
    table = _read_table(path)
    if "participant_id" not in table.columns:
        raise ConfigError(f"{path} has no participant_id column; its columns are: {', '.join(table.columns)}")
    table["participant_id"] = [_bids_label(v) for v in table["participant_id"]]
    _raise_on_duplicates(table, str(path))
    return table.drop(columns=[c for c in (PATH_COLUMN, "session") if c in table.columns])


def _bids_label(value: object) -> str:
    text = "" if pd.isna(value) else str(value).strip()
    return text if text.startswith("sub-") else f"sub-{text}"


def _merge_sessions(table: pd.DataFrame, bids_dir: Path) -> pd.DataFrame:
    """Per-session covariates (e.g. age at the scan) in sub-X/sub-X_sessions.tsv override participants.tsv."""
    table = table.copy()
    for index, row in table.iterrows():
        if not row["session"]:
            continue
        sessions_tsv = bids_dir / row["participant_id"] / f"{row['participant_id']}_sessions.tsv"
        if not sessions_tsv.is_file():
            continue
        sessions = _read_table(sessions_tsv)
        if "session_id" not in sessions.columns:
            raise ConfigError(f"{sessions_tsv} has no session_id column")
        match = sessions[sessions["session_id"].astype(str).str.strip() == row["session"]]
        if match.empty:
            continue
        for column, value in match.iloc[0].drop(labels="session_id").items():
            if column in ("participant_id", PATH_COLUMN, "session"):
                continue
            if column not in table.columns:
                table[column] = float("nan")
            table[column] = table[column].astype(object)
            table.at[index, column] = value
    return table.infer_objects()


# ------------------------------------------------------------------------------------------- covariates


def required_covariates(subpopulations_cfg: dict | None) -> dict[str, str]:
    """Covariates the sub-populations need: name -> 'continuous' (entries with quantiles) or 'categorical'."""
    out: dict[str, str] = {}
    for name, entry in (subpopulations_cfg or {}).items():
        if not isinstance(entry, dict):
            raise ConfigError(f"subpopulations.{name} must be a mapping")
        covariate = entry.get("covariate", name)
        if "quantiles" in entry:
            kind = "continuous"
        elif "levels" in entry:
            kind = "categorical"
        else:
            raise ConfigError(
                f"subpopulations.{name} needs either quantiles (continuous) or levels (categorical)"
            )
        if out.get(covariate, kind) != kind:
            raise ConfigError(
                f"covariate {covariate!r} is used as both continuous and categorical in subpopulations"
            )
        out[covariate] = kind
    return out

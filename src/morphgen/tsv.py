"""Tab-separated tables written atomically; ids stay text ("001" must not become 1), NaN is written n/a."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from morphgen.nifti import atomic_output

ID_COLUMNS = ("participant_id", "sample_id", "sample", "id")
NA_REP = "n/a"


def id_column(df: pd.DataFrame, what: str = "volume table") -> str:
    """The id column of a volume table: the first of participant_id, sample_id, sample, id that exists."""
    for col in ID_COLUMNS:
        if col in df.columns:
            return col
    raise ValueError(f"{what}: none of the id columns {ID_COLUMNS} found (columns: {list(df.columns)})")


def write_tsv(table: pd.DataFrame, path: str | Path) -> Path:
    with atomic_output(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep=NA_REP)
    return Path(path)


def read_tsv(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`write_tsv`; the id columns and every ``*_id`` column are read as text."""
    header = pd.read_csv(path, sep="\t", nrows=0).columns
    text = {col: str for col in header if col in ID_COLUMNS or str(col).endswith("_id")}
    return pd.read_csv(path, sep="\t", na_values=[NA_REP], dtype=text)


def concat_tsvs(paths: list[str | Path], out_path: str | Path) -> pd.DataFrame:
    """One table from tables with the same id column (a rule's batches), rows in the order given.

    Columns missing from a table (an error column that only one batch has) are n/a in its rows.
    """
    if not paths:
        raise ValueError(f"no tables to join into {out_path}")
    table = pd.concat([read_tsv(p) for p in paths], ignore_index=True, sort=False)
    write_tsv(table, out_path)
    return table

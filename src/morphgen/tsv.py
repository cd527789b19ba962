"""Tab-separated tables written atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from morphgen.nifti import atomic_output


def write_tsv(table: pd.DataFrame, path: str | Path, float_format: str = "%.6g") -> Path:
    with atomic_output(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format=float_format, na_rep="NaN")
    return Path(path)


def read_tsv(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str, "sample_id": str})

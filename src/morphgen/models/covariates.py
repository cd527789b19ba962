"""Covariates that condition a generative model (seed 004): age, sex, ventricular and brain volume.

Each covariate is a column of the subjects table (``split/subjects.tsv``, the participants' sheet) or of the
real images' volumes (``volumes/real.tsv``). The volumes are measured in MNI space after the affine
normalisation, which scales every head to the template: ``brain_ml`` there is a brain volume normalised for
head size, as UK Biobank's Data-Field 25009 that the seed conditions on.

Values are min-max normalised with the ranges of the training subjects, which the model stores. A request
outside a range is allowed (the seed extrapolates, its Fig. 4) and flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from morphgen.errors import ConfigError, SubjectError
from morphgen.tsv import read_tsv

ID = "participant_id"
REQUEST_ID = "sample_id"  # the requested sample's name: its file and its row in every table
VARY = "vary"  # the covariate a grid row varies ('' for a row of the requests table)
OUTSIDE = "outside_range"
_FILE_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# name -> column: the seed's four covariates, as this pipeline measures them
DEFAULT_COVARIATES = {"age": "age", "sex": "sex", "ventricles": "ventricles_ml", "brain": "brain_ml"}


def covariate_columns(conditioning: dict | None) -> dict[str, str]:
    """``model.conditioning.covariates`` (name -> column), or the seed's four when it names none."""
    return dict((conditioning or {}).get("covariates") or DEFAULT_COVARIATES)


def measured_covariates(columns: dict[str, str]) -> dict[str, str]:
    """The covariates (name -> column) that segmentation measures in a sample too: those read from the
    volumes table, whose columns are all ``<volume>_ml``."""
    return {name: column for name, column in columns.items() if str(column).endswith("_ml")}


def covariate_table(subjects: pd.DataFrame, volumes: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """One row per subject of ``subjects``: its id and each covariate (``name -> column``), by name.

    A column is looked up in ``subjects`` first, then in ``volumes`` (joined on the id). A subject without a
    value (e.g. its segmentation failed) raises SubjectError naming it and the column.
    """
    table = subjects[[ID]].copy()
    for name, column in columns.items():
        if column in subjects.columns:
            table[name] = subjects[column].to_numpy()
        elif column in volumes.columns:
            table[name] = table[ID].map(volumes.set_index(ID)[column])
        else:
            raise ConfigError(
                f"covariate {name!r}: no column {column!r} in the subjects table or the volumes table "
                f"(columns: {', '.join(map(str, [*subjects.columns, *volumes.columns]))})"
            )
        missing = table[name].isna()
        if missing.any():
            first = table.loc[missing, ID].iloc[0]
            raise SubjectError(first, None, f"no value of {column!r} for covariate {name!r}")
    return table


@dataclass
class CovariateScaler:
    """Min-max normalisation of named covariates; a text covariate (sex) by the index of its level."""

    names: list[str]
    minimum: list[float]
    maximum: list[float]
    levels: dict[str, list[str]] = field(default_factory=dict)  # text covariates: their sorted values
    typical: dict[str, float | str] = field(default_factory=dict)  # median, or most frequent level

    @classmethod
    def fit(cls, table: pd.DataFrame, names: list[str]) -> CovariateScaler:
        levels, typical, lo, hi = {}, {}, [], []
        for name in names:
            values = table[name]
            if _is_text(values):
                levels[name] = sorted(values.astype(str).unique())
                typical[name] = str(values.astype(str).mode().sort_values().iloc[0])
                lo.append(0.0)
                hi.append(float(max(len(levels[name]) - 1, 1)))
            else:
                numbers = values.astype(float)
                typical[name] = float(numbers.median())
                lo.append(float(numbers.min()))
                hi.append(float(numbers.max()))
        return cls(list(names), lo, hi, levels, typical)

    def _numeric(self, table: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.names:
            if name not in table.columns:
                raise ConfigError(
                    f"covariate {name!r} is missing (columns: {', '.join(map(str, table.columns))})"
                )
            if name in self.levels:
                known = self.levels[name]
                values = table[name].astype(str)
                unknown = sorted(set(values) - set(known))
                if unknown:
                    raise ConfigError(f"covariate {name!r}: {unknown} not among the training values {known}")
                columns.append(values.map(known.index).to_numpy(dtype=float))
            else:
                columns.append(table[name].astype(float).to_numpy())
        return np.stack(columns, axis=1) if columns else np.zeros((len(table), 0))

    def _span(self) -> np.ndarray:
        lo, hi = np.asarray(self.minimum), np.asarray(self.maximum)
        return np.where(hi > lo, hi - lo, 1.0)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """(n, covariates) float32 in [0, 1] inside the training ranges (outside them when extrapolating)."""
        return ((self._numeric(table) - np.asarray(self.minimum)) / self._span()).astype(np.float32)

    def inverse(self, values: np.ndarray) -> pd.DataFrame:
        """Covariates in their own units from normalised values (a text covariate by its nearest level)."""
        raw = np.asarray(values, dtype=float) * self._span() + np.asarray(self.minimum)
        out = {}
        for i, name in enumerate(self.names):
            if name in self.levels:
                levels = self.levels[name]
                out[name] = [levels[int(np.clip(round(v), 0, len(levels) - 1))] for v in raw[:, i]]
            else:
                out[name] = raw[:, i]
        return pd.DataFrame(out)

    def outside(self, table: pd.DataFrame) -> pd.Series:
        """Per row, the covariates outside their training range, comma-separated ('' when none)."""
        values = self._numeric(table)
        out = (values < np.asarray(self.minimum)) | (values > np.asarray(self.maximum))
        return pd.Series(
            [",".join(n for n, o in zip(self.names, row, strict=True) if o) for row in out], index=table.index
        )

    def at(self, name: str, positions: list[float]) -> list[float]:
        """Values of a numeric covariate at ``positions`` of its training range (0: minimum, 1: maximum)."""
        if name not in self.names:
            raise ConfigError(f"no covariate {name!r}: the model is conditioned on {self.names}")
        if name in self.levels:
            raise ConfigError(
                f"covariate {name!r} takes the values {self.levels[name]}: ask for them in a requests table, "
                "a grid varies numeric covariates"
            )
        i = self.names.index(name)
        lo, hi = self.minimum[i], self.maximum[i]
        return [float(lo + u * (hi - lo)) for u in positions]

    def state_dict(self) -> dict:
        """Plain types only: it goes into a model file loaded with ``weights_only=True``."""
        return {
            "names": list(self.names),
            "minimum": [float(v) for v in self.minimum],
            "maximum": [float(v) for v in self.maximum],
            "levels": {k: list(v) for k, v in self.levels.items()},
            "typical": dict(self.typical),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> CovariateScaler:
        return cls(
            list(state["names"]),
            list(state["minimum"]),
            list(state["maximum"]),
            {k: list(v) for k, v in state["levels"].items()},
            dict(state["typical"]),
        )


# ---- conditioned sampling: what the user asks for ----------------------------------------------------------


def read_requests(path: str | Path) -> pd.DataFrame:
    """A requests table (TSV): one row per sample, one column per covariate in its own units, optionally
    ``sample_id``; a covariate left out (column or cell) takes its typical training value."""
    table = read_tsv(path)  # sample_id as text
    if table.empty:
        raise ConfigError(f"the requests table {path} has no rows")
    return table


def grid_positions(grid: dict) -> list[float]:
    """Where a grid row samples each covariate's range: ``steps`` points over ``range`` (0: the training
    minimum, 1: the maximum; beyond them the model extrapolates, as in seed 004's Fig. 4)."""
    lo, hi = (float(v) for v in grid.get("range", [0.0, 1.0]))
    return [float(u) for u in np.linspace(lo, hi, int(grid.get("steps", 5)))]


def request_ids(table: pd.DataFrame | None, grid: dict | None) -> list[str]:
    """The name of each requested sample, known before any model exists: the table's ``sample_id`` (or
    ``request-0001`` ... by row), then ``<covariate>-01`` ... along each grid row."""
    ids = []
    if table is not None:
        if REQUEST_ID in table.columns:
            ids += [str(v) for v in table[REQUEST_ID]]
        else:
            ids += [f"request-{i + 1:04d}" for i in range(len(table))]
    if grid:
        steps = len(grid_positions(grid))
        ids += [f"{name}-{k + 1:02d}" for name in grid.get("vary", []) for k in range(steps)]
    bad = [i for i in ids if not _FILE_SAFE.match(i)]
    if bad:
        raise ConfigError(f"request ids name files: letters, digits, '_', '.', '-' only, not {bad[:5]}")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"request ids must be unique: {repeated[:5]} appear more than once")
    return ids


def request_table(scaler: CovariateScaler, table: pd.DataFrame | None, grid: dict | None) -> pd.DataFrame:
    """The covariates of every requested sample, in their own units: columns ``sample_id``, ``vary``, then
    one per covariate. What a row leaves out is the training subjects' typical value (median, or the most
    frequent level), so a grid row varies one covariate with the others fixed (seed 004's Fig. 2)."""
    ids = request_ids(table, grid)
    rows = []
    if table is not None:
        unknown = [c for c in table.columns if c not in (REQUEST_ID, *scaler.names)]
        if unknown:
            raise ConfigError(
                f"the requests table has columns {unknown} that are not covariates {scaler.names}"
            )
        for _, asked in table.iterrows():
            row = {VARY: ""}
            for name in scaler.names:
                value = asked.get(name)
                row[name] = scaler.typical[name] if value is None or pd.isna(value) else value
            rows.append(row)
    if grid:
        positions = grid_positions(grid)
        for name in grid.get("vary", []):
            rows += [{**scaler.typical, VARY: name, name: v} for v in scaler.at(name, positions)]
    out = pd.DataFrame(rows, columns=[VARY, *scaler.names])
    out.insert(0, REQUEST_ID, ids)
    return out


def _is_text(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)

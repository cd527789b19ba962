"""Covariates that condition a generative model (seed 004): age, sex, ventricular and brain volume.

Each covariate is a column of the subjects table (``split/subjects.tsv``, the participants' sheet) or of the
real images' volumes (``volumes/real.tsv``). The volumes are measured in MNI space after the affine
normalisation, which scales every head to the template: ``brain_ml`` there is a brain volume normalised for
head size, as UK Biobank's Data-Field 25009 that the seed conditions on.

Values are min-max normalised with the ranges of the training subjects, which the model stores. A request
outside a range is allowed (the seed extrapolates, its Fig. 4) and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from morphgen.errors import ConfigError, SubjectError

ID = "participant_id"
# name -> column: the seed's four covariates, as this pipeline measures them
DEFAULT_COVARIATES = {"age": "age", "sex": "sex", "ventricles": "ventricles_ml", "brain": "brain_ml"}


def covariate_columns(conditioning: dict | None) -> dict[str, str]:
    """``model.conditioning.covariates`` (name -> column), or the seed's four when it names none."""
    return dict((conditioning or {}).get("covariates") or DEFAULT_COVARIATES)


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

    def grid(self, vary: str, values: list[float | str]) -> pd.DataFrame:
        """Rows with ``vary`` taking each of ``values`` and every other covariate at its typical value."""
        if vary not in self.names:
            raise ConfigError(f"cannot vary {vary!r}: the covariates are {self.names}")
        rows = [{**self.typical, vary: v} for v in values]
        return pd.DataFrame(rows, columns=self.names)

    def span(self, vary: str, n: int, extend: float = 0.0) -> list[float]:
        """``n`` evenly spaced values of a numeric covariate over its range, widened by ``extend`` x range."""
        if vary in self.levels:
            return list(self.levels[vary])
        i = self.names.index(vary)
        lo, hi = self.minimum[i], self.maximum[i]
        pad = extend * (hi - lo)
        return [float(v) for v in np.linspace(lo - pad, hi + pad, n)]

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


def _is_text(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)

"""Seeded train/test split and sub-populations (first vs last quantile, or levels of a category)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from morphgen.errors import ConfigError


def assign_split(ids: list[str], test_fraction: float, seed: int) -> pd.Series:
    """'train' or 'test' per id; depends only on the set of ids and the seed, not on their order."""
    ordered = sorted(ids)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ordered))
    n_test = int(round(len(ordered) * test_fraction))
    if len(ordered) >= 2:
        n_test = min(max(n_test, 1), len(ordered) - 1)
    labels = np.array(["train"] * len(ordered), dtype=object)
    labels[perm[:n_test]] = "test"
    return pd.Series(labels, index=ordered, name="split")


def assign_subpopulation(values: pd.Series, key: str, entry: dict) -> pd.Series:
    """Sub-population name ("<key>-<name>") per subject, or "" for subjects in neither group.

    Continuous covariates: the first and the last of ``quantiles`` equal-count bins, cut on all usable
    subjects. Categorical: one name per level in ``levels``.
    """
    names = entry["names"]
    out = pd.Series("", index=values.index, dtype=object)
    if "quantiles" in entry:
        x = pd.to_numeric(values, errors="coerce")
        if x.isna().any():
            bad = list(values.index[x.isna()])
            raise ConfigError(
                f"sub-population {key!r}: covariate {entry['covariate']!r} is not numeric for {bad}"
            )
        q = int(entry["quantiles"])
        lo, hi = np.quantile(x.to_numpy(dtype=float), [1.0 / q, 1.0 - 1.0 / q])
        out[x <= lo] = f"{key}-{names[0]}"
        out[x >= hi] = f"{key}-{names[1]}"
    else:
        as_text = values.astype(str)
        for level, name in zip(entry["levels"], names, strict=True):
            out[as_text == str(level)] = f"{key}-{name}"
    return out


def make_split(subjects: pd.DataFrame, split_cfg: dict, subpop_cfg: dict) -> pd.DataFrame:
    """Usable subjects with columns split and subpop_<key> for every configured sub-population."""
    if subjects.empty:
        raise ConfigError("no usable subjects: every subject was excluded (see the input QC table)")
    table = subjects.set_index("participant_id", drop=False).sort_index()
    table["split"] = assign_split(list(table.index), split_cfg["test_fraction"], split_cfg["seed"])
    for key, entry in subpop_cfg.items():
        if entry["covariate"] not in table.columns:
            raise ConfigError(
                f"sub-population {key!r} needs covariate {entry['covariate']!r}, absent from the sheet"
            )
        table[f"subpop_{key}"] = assign_subpopulation(table[entry["covariate"]], key, entry)
        for name in entry["names"]:
            members = table[table[f"subpop_{key}"] == f"{key}-{name}"]
            if (members["split"] == "train").sum() < 2:
                raise ConfigError(
                    f"sub-population {key}-{name} has {int((members['split'] == 'train').sum())} training "
                    "subjects; a prior needs at least 2 (more subjects, or fewer quantiles)"
                )
    return table.reset_index(drop=True)


def members(table: pd.DataFrame, subpop: str, split: str | None = None) -> pd.DataFrame:
    key = subpop.split("-", 1)[0]
    sel = table[f"subpop_{key}"] == subpop
    if split is not None:
        sel &= table["split"] == split
    return table[sel]

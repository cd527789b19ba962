"""Seeded train/test split and sub-populations (first vs last quantile, or levels of a category)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from morphgen.errors import ConfigError


def assign_split(
    ids: list[str], test_fraction: float, seed: int, strata: pd.Series | None = None
) -> pd.Series:
    """'train' or 'test' per id; depends only on the ids, their strata and the seed, not on their order.

    With ``strata`` (a label per id), each stratum is split in the same proportion (largest remainders
    decide the rounding), so every sub-population gets both training and held-out subjects.
    """
    ordered = sorted(ids)
    rng = np.random.default_rng(seed)
    labels = pd.Series("train", index=ordered, name="split", dtype=object)
    groups = (
        {"": ordered}
        if strata is None
        else {
            key: sorted(members)
            for key, members in strata.loc[ordered].groupby(strata.loc[ordered]).groups.items()
        }
    )
    n_test_total = int(round(len(ordered) * test_fraction))
    if len(ordered) >= 2:
        n_test_total = min(max(n_test_total, 1), len(ordered) - 1)
    quotas = {key: len(members) * test_fraction for key, members in sorted(groups.items())}
    counts = {key: int(np.floor(q)) for key, q in quotas.items()}
    remainders = sorted(quotas, key=lambda k: (-(quotas[k] - counts[k]), rng.random()))
    for key in remainders[: max(0, n_test_total - sum(counts.values()))]:
        counts[key] += 1
    for key in sorted(groups):
        members = groups[key]
        perm = rng.permutation(len(members))
        labels[[members[i] for i in perm[: counts[key]]]] = "test"
    return labels


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
    """Usable subjects with columns split and subpop_<key> for every configured sub-population.

    The split is stratified by sub-population, and each sub-population keeps at least one held-out subject
    (its prior's validation set).
    """
    if subjects.empty:
        raise ConfigError("no usable subjects: every subject was excluded (see the QC tables in results/qc)")
    table = subjects.set_index("participant_id", drop=False).sort_index()
    columns = [f"subpop_{key}" for key in subpop_cfg]
    for key, entry in subpop_cfg.items():
        if entry["covariate"] not in table.columns:
            raise ConfigError(
                f"sub-population {key!r} needs covariate {entry['covariate']!r}, absent from the sheet"
            )
        table[f"subpop_{key}"] = assign_subpopulation(table[entry["covariate"]], key, entry)
    strata = table[columns].agg("|".join, axis=1)
    table["split"] = assign_split(list(table.index), split_cfg["test_fraction"], split_cfg["seed"], strata)
    _hold_out_one_per_subpopulation(table, columns, split_cfg["seed"])
    counts, short = [], False
    for key, entry in subpop_cfg.items():
        for name in entry["names"]:
            split = table.loc[table[f"subpop_{key}"] == f"{key}-{name}", "split"]
            n_train, n_test = int((split == "train").sum()), int((split == "test").sum())
            short |= n_train < 2 or n_test < 1
            counts.append(f"{key}-{name}: {n_train} training, {n_test} held-out")
    if short:
        raise ConfigError(
            f"the sub-populations cannot each have a prior: each needs at least 2 training and 1 held-out "
            f"subject, and {len(table)} subjects passed the QC gate ({'; '.join(counts)}). Add subjects, or "
            "edit subpopulations.<key> (fewer quantiles, other levels) or split.test_fraction; preprocessing "
            "alone (target preprocess) needs none of this"
        )
    return table.reset_index(drop=True)


def _hold_out_one_per_subpopulation(table: pd.DataFrame, columns: list[str], seed: int) -> None:
    """Move subjects so each sub-population has a held-out subject, swapping back one that is not needed."""
    rng = np.random.default_rng(seed + 1)

    def test_counts():
        held = table[table["split"] == "test"]
        return {name: int((held[c] == name).sum()) for c in columns for name in table[c].unique() if name}

    for col in columns:
        for name in sorted(n for n in table[col].unique() if n):
            if test_counts()[name] > 0:
                continue
            candidates = sorted(table.index[(table[col] == name) & (table["split"] == "train")])
            if len(candidates) < 3:  # too few to spare one; make_split reports it
                continue
            table.loc[candidates[rng.integers(len(candidates))], "split"] = "test"
            counts = test_counts()
            spare = [
                sid
                for sid in sorted(table.index[table["split"] == "test"])
                if all(counts[table.loc[sid, c]] > 1 for c in columns if table.loc[sid, c])
            ]
            if spare:
                table.loc[spare[rng.integers(len(spare))], "split"] = "train"


def members(table: pd.DataFrame, subpop: str, split: str | None = None) -> pd.DataFrame:
    key = subpop.split("-", 1)[0]
    sel = table[f"subpop_{key}"] == subpop
    if split is not None:
        sel &= table["split"] == split
    return table[sel]

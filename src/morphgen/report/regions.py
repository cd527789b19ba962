"""Regional anatomy of real vs synthetic brains, after seed 002 (§2.2-2.3).

- :func:`region_volume_table`: per sub-population and region, real vs synthetic volumes with t-test and
  Cohen's d (Table 2's layout, one row per region; seed 002's Fig. 2).
- :func:`region_effects`: per region, the designed group effects (Cohen's d of old vs young, AD vs CN) in real
  and in synthetic images, and the age effect (Pearson r of volume with age) in real images and in synthetic
  images that carry an age (conditioned families).
- :func:`effect_agreement`: across regions, how well synthetic effects follow real ones (Pearson r of the
  real and synthetic effects, seed 002's Fig. 3), and seed 002's share of regions with small, medium and
  large real-vs-synthetic differences.

Input tables have an id column and one ``<region>_ml`` column per region.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from morphgen.report.tables import default_contrasts, id_column, subgroup_effects, table2_volumes
from morphgen.tsv import write_tsv

log = logging.getLogger(__name__)

# seed 002's effect-size bands for real vs synthetic: small |d| < 0.2, medium < 0.5, large otherwise
SMALL_D, MEDIUM_D = 0.2, 0.5


def region_names(table: pd.DataFrame) -> list[str]:
    """Regions of a regional volume table: its ``<region>_ml`` columns whose values are not all missing."""
    out = []
    for col in table.columns:
        if col.endswith("_ml") and pd.to_numeric(table[col], errors="coerce").notna().any():
            out.append(col.removesuffix("_ml"))
    return out


def region_volume_table(
    real: pd.DataFrame,
    synthetic: Mapping[str, pd.DataFrame],
    members: Mapping[str, Sequence[str]],
    alpha: float,
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Table 2 over regions: per sub-population and region real vs synthetic, Welch t-test, Cohen's d."""
    df = table2_volumes(real, synthetic, members, alpha, tissues=region_names(real)).rename(
        columns={"tissue": "region"}
    )
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


def _age_r(table: pd.DataFrame, ages: pd.Series, region: str) -> tuple[float, int]:
    v = pd.to_numeric(table[f"{region}_ml"], errors="coerce").to_numpy(dtype=np.float64)
    a = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(a)
    if ok.sum() < 3 or np.ptp(v[ok]) == 0 or np.ptp(a[ok]) == 0:
        return float("nan"), int(ok.sum())
    return float(stats.pearsonr(a[ok], v[ok]).statistic), int(ok.sum())


def region_effects(
    real: pd.DataFrame,
    covariates: pd.DataFrame,
    synthetic: Mapping[str, pd.DataFrame],
    members: Mapping[str, Sequence[str]],
    *,
    contrasts: Sequence[tuple[str, str]] | None = None,
    age_column: str = "age",
    sex_column: str = "sex",
    out_tsv: str | Path | None = None,
) -> pd.DataFrame:
    """Per region, group and age effects in real and synthetic images (long table).

    Rows with ``effect == "cohen_d"`` come from :func:`~morphgen.report.tables.subgroup_effects` (``name`` is
    the contrast, a minus b). Rows with ``effect == "age_r"`` hold Pearson r of volume with age: real over
    every subject of ``covariates`` with an age, synthetic over the samples of all sub-populations whose
    table has an ``age`` column (NaN otherwise: a sub-population prior's samples have no age of their own).
    Rows with ``effect == "sex_d"`` hold Cohen's d of the second sex level minus the first (``name``:
    "M - F"), real over the subjects, synthetic over the samples whose table has a ``sex`` column (a
    conditioned family's, seed 002). Columns: effect, name, region, real, synthetic, difference
    (synthetic - real), n_real, n_synthetic.
    """
    regions = region_names(real)
    contrasts = default_contrasts(members.keys()) if contrasts is None else contrasts
    rows = []
    groups = subgroup_effects(real, synthetic, members, contrasts, tissues=regions)
    for rec in groups.to_dict("records"):
        rows.append(
            {
                "effect": "cohen_d",
                "name": rec["contrast"],
                "region": rec["tissue"],
                "real": rec["real_d"],
                "synthetic": rec["synthetic_d"],
                "n_real": rec["n_real_a"] + rec["n_real_b"],
                "n_synthetic": rec["n_synthetic_a"] + rec["n_synthetic_b"],
            }
        )
    if age_column in covariates.columns:
        ids = covariates[id_column(covariates, "covariates")].astype(str)
        ages = pd.Series(covariates[age_column].to_numpy(), index=ids)
        real_ids = real[id_column(real, "real regional volumes")].astype(str)
        real_ages = ages.reindex(real_ids.to_numpy())
        aged = [t for t in synthetic.values() if age_column in t.columns]
        synth = pd.concat(aged, ignore_index=True) if aged else None
        for region in regions:
            r_real, n_real = _age_r(real, real_ages, region)
            r_synth, n_synth = float("nan"), 0
            if synth is not None and f"{region}_ml" in synth.columns:
                r_synth, n_synth = _age_r(synth, synth[age_column], region)
            rows.append(
                {
                    "effect": "age_r",
                    "name": age_column,
                    "region": region,
                    "real": r_real,
                    "synthetic": r_synth,
                    "n_real": n_real,
                    "n_synthetic": n_synth,
                }
            )
    rows += _sex_rows(real, covariates, synthetic, regions, sex_column)
    df = pd.DataFrame(
        rows, columns=["effect", "name", "region", "real", "synthetic", "n_real", "n_synthetic"]
    )
    df.insert(5, "difference", df["synthetic"] - df["real"])
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df


def _sex_rows(real, covariates, synthetic, regions, column: str) -> list[dict]:
    """Per region, Cohen's d between the two sex levels of the real subjects, real and synthetic."""
    from morphgen.metrics.stats import compare_groups

    if column not in covariates.columns:
        return []
    ids = covariates[id_column(covariates, "covariates")].astype(str)
    sexes = pd.Series(covariates[column].astype(str).to_numpy(), index=ids)
    levels = sorted(sexes.dropna().unique())
    if len(levels) != 2:
        return []
    real_sex = sexes.reindex(real[id_column(real, "real regional volumes")].astype(str).to_numpy()).to_numpy()
    tagged = [t for t in synthetic.values() if column in t.columns]
    synth = pd.concat(tagged, ignore_index=True) if tagged else None
    rows = []
    for region in regions:
        values = pd.to_numeric(real[f"{region}_ml"], errors="coerce").to_numpy(dtype=np.float64)
        d_real = compare_groups(values[real_sex == levels[1]], values[real_sex == levels[0]])
        d_synth = {"cohen_d": float("nan"), "n_a": 0, "n_b": 0}
        if synth is not None and f"{region}_ml" in synth.columns:
            v = pd.to_numeric(synth[f"{region}_ml"], errors="coerce").to_numpy(dtype=np.float64)
            sex = synth[column].astype(str).to_numpy()
            d_synth = compare_groups(v[sex == levels[1]], v[sex == levels[0]])
        rows.append(
            {
                "effect": "sex_d",
                "name": f"{levels[1]} - {levels[0]}",
                "region": region,
                "real": d_real["cohen_d"],
                "synthetic": d_synth["cohen_d"],
                "n_real": d_real["n_a"] + d_real["n_b"],
                "n_synthetic": d_synth["n_a"] + d_synth["n_b"],
            }
        )
    return rows


def _correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan")
    res = stats.pearsonr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue)


def effect_agreement(
    effects: pd.DataFrame, volumes: pd.DataFrame, out_tsv: str | Path | None = None
) -> pd.DataFrame:
    """Across regions: do synthetic effects follow real ones, and how far are synthetic volumes from real?

    One row per group contrast and for age (from :func:`region_effects`): ``pearson_r`` and ``p`` of real
    against synthetic effects over the regions where both are finite, ``mean_abs_difference``, and
    ``same_sign_fraction``. One row per sub-population (from :func:`region_volume_table`): the fractions of
    regions whose real-vs-synthetic |d| is small (< 0.2), medium (< 0.5) or large, as in seed 002.
    """
    rows = []
    for (effect, name), group in effects.groupby(["effect", "name"], sort=False):
        x, y = group["real"].to_numpy(dtype=float), group["synthetic"].to_numpy(dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        r, p = _correlation(x, y)
        rows.append(
            {
                "comparison": effect,
                "name": name,
                "n_regions": int(ok.sum()),
                "pearson_r": r,
                "p": p,
                "mean_abs_difference": float(np.mean(np.abs(y[ok] - x[ok]))) if ok.any() else np.nan,
                "same_sign_fraction": float(np.mean(np.sign(x[ok]) == np.sign(y[ok])))
                if ok.any()
                else np.nan,
            }
        )
    for name, group in volumes.groupby("subpopulation", sort=False):
        d = np.abs(group["cohen_d"].to_numpy(dtype=float))
        d = d[np.isfinite(d)]
        rows.append(
            {
                "comparison": "real_vs_synthetic_d",
                "name": name,
                "n_regions": len(d),
                "fraction_small": float(np.mean(d < SMALL_D)) if len(d) else np.nan,
                "fraction_medium": float(np.mean((d >= SMALL_D) & (d < MEDIUM_D))) if len(d) else np.nan,
                "fraction_large": float(np.mean(d >= MEDIUM_D)) if len(d) else np.nan,
            }
        )
    columns = [
        "comparison",
        "name",
        "n_regions",
        "pearson_r",
        "p",
        "mean_abs_difference",
        "same_sign_fraction",
        "fraction_small",
        "fraction_medium",
        "fraction_large",
    ]
    df = pd.DataFrame(rows).reindex(columns=columns)
    if out_tsv is not None:
        write_tsv(df, out_tsv)
    return df

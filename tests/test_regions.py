"""Regional effects, real vs synthetic (seed 002): Cohen's d per region, age r, and their agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from morphgen.report.regions import effect_agreement, region_effects, region_names, region_volume_table

REGIONS = ("ventricle", "hippocampus", "thalamus", "putamen", "caudate")
# per-region slope with age (ml per year); the synthetic samples copy the sign and size of each
SLOPES = {"ventricle": 0.3, "hippocampus": -0.05, "thalamus": -0.02, "putamen": 0.0, "caudate": 0.01}


def _cohort(rng, n: int = 40):
    ages = rng.uniform(45, 85, n)
    table = {"participant_id": [f"sub-{k:03d}" for k in range(n)]}
    for region, slope in SLOPES.items():
        table[f"{region}_ml"] = 10.0 + slope * (ages - 65) + rng.normal(0, 0.3, n)
    table["empty_ml"] = np.nan  # a region no image has: not a region of the table
    real = pd.DataFrame(table)
    covariates = pd.DataFrame({"participant_id": table["participant_id"], "age": ages})
    order = np.argsort(ages)
    members = {
        "age-young": [table["participant_id"][k] for k in order[:13]],
        "age-old": [table["participant_id"][k] for k in order[-13:]],
    }
    return real, covariates, members, ages


def _samples(rng, low: float, high: float, n: int, prefix: str, with_age: bool = False) -> pd.DataFrame:
    """Samples of a faithful model of the ages [low, high]."""
    ages = rng.uniform(low, high, n)
    table = {"participant_id": [f"{prefix}-{k}" for k in range(n)]}
    for region, slope in SLOPES.items():
        table[f"{region}_ml"] = 10.0 + slope * (ages - 65) + rng.normal(0, 0.3, n)
    if with_age:
        table["age"] = ages
    return pd.DataFrame(table)


def _cohen_d(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return (a.mean() - b.mean()) / pooled


def test_region_names_skip_columns_without_values():
    real, *_ = _cohort(np.random.default_rng(0))
    assert region_names(real) == list(REGIONS)


def test_group_and_age_effects_per_region_match_independent_formulas():
    rng = np.random.default_rng(1)
    real, covariates, members, ages = _cohort(rng)
    synthetic = {"age-young": _samples(rng, 45, 58, 10, "y"), "age-old": _samples(rng, 72, 85, 10, "o")}
    effects = region_effects(real, covariates, synthetic, members, contrasts=[("age-old", "age-young")])
    d = effects[effects.effect == "cohen_d"].set_index("region")
    r = effects[effects.effect == "age_r"].set_index("region")
    assert set(d.index) == set(r.index) == set(REGIONS)
    by_id = real.set_index("participant_id")
    for region in REGIONS:
        col = f"{region}_ml"
        real_d = _cohen_d(by_id.loc[members["age-old"], col], by_id.loc[members["age-young"], col])
        synth_d = _cohen_d(synthetic["age-old"][col], synthetic["age-young"][col])
        assert d.loc[region, "real"] == pytest.approx(real_d)
        assert d.loc[region, "synthetic"] == pytest.approx(synth_d)
        assert d.loc[region, "difference"] == pytest.approx(synth_d - real_d)
        assert r.loc[region, "real"] == pytest.approx(stats.pearsonr(ages, real[col]).statistic)
        assert np.isnan(r.loc[region, "synthetic"])  # the samples carry no age of their own
    assert d.loc["ventricle", "real"] > 2 and d.loc["hippocampus", "real"] < -1  # the designed effects
    assert (d["n_real"] == 26).all() and (d["n_synthetic"] == 20).all()


def test_samples_with_an_age_get_an_age_r():
    rng = np.random.default_rng(2)
    real, covariates, members, _ = _cohort(rng)
    synthetic = {
        "age-young": _samples(rng, 45, 58, 10, "y", with_age=True),
        "age-old": _samples(rng, 72, 85, 10, "o", with_age=True),
    }
    effects = region_effects(real, covariates, synthetic, members)
    r = effects[effects.effect == "age_r"].set_index("region")
    both = pd.concat(synthetic.values())
    expected = stats.pearsonr(both["age"], both["ventricle_ml"]).statistic
    assert r.loc["ventricle", "synthetic"] == pytest.approx(expected) and expected > 0.8


def test_agreement_across_regions_and_effect_size_bands():
    rng = np.random.default_rng(3)
    real, covariates, members, _ = _cohort(rng)
    faithful = {"age-young": _samples(rng, 45, 58, 12, "y"), "age-old": _samples(rng, 72, 85, 12, "o")}
    flat = {"age-young": _samples(rng, 45, 85, 12, "y"), "age-old": _samples(rng, 45, 85, 12, "o")}
    rows = {}
    for name, synthetic in (("faithful", faithful), ("flat", flat)):
        effects = region_effects(real, covariates, synthetic, members)
        volumes = region_volume_table(real, synthetic, members, alpha=0.05)
        agreement = effect_agreement(effects, volumes).set_index(["comparison", "name"])
        d = effects[effects.effect == "cohen_d"]
        expected = np.corrcoef(d["real"], d["synthetic"])[0, 1]
        row = agreement.loc[("cohen_d", "age-old vs age-young")]
        assert row["pearson_r"] == pytest.approx(expected) and row["n_regions"] == len(REGIONS)
        assert row["mean_abs_difference"] == pytest.approx(np.mean(np.abs(d["synthetic"] - d["real"])))
        bands = agreement.loc[("real_vs_synthetic_d", "age-old")]
        old = np.abs(volumes.loc[volumes.subpopulation == "age-old", "cohen_d"].to_numpy())
        assert bands["fraction_small"] == pytest.approx(np.mean(old < 0.2))
        assert bands["fraction_large"] == pytest.approx(np.mean(old >= 0.5))
        assert bands[["fraction_small", "fraction_medium", "fraction_large"]].sum() == pytest.approx(1.0)
        rows[name] = row
    assert rows["faithful"]["pearson_r"] > 0.9
    assert rows["faithful"]["mean_abs_difference"] < rows["flat"]["mean_abs_difference"]
    assert np.isnan(agreement.loc[("age_r", "age"), "pearson_r"])  # no synthetic ages: nothing to correlate
    # Table 2's layout over regions: real vs synthetic per sub-population, one Bonferroni threshold
    assert set(volumes.columns) >= {"subpopulation", "region", "t", "p", "cohen_d", "bonferroni_threshold"}
    assert (volumes["bonferroni_threshold"] == 0.05 / len(volumes)).all()


def test_samples_with_a_sex_get_a_sex_effect_per_region_and_its_agreement():
    """Men have 8 ml more ventricle and 1 ml less hippocampus; samples that carry their sex and keep both
    effects have sex effects that follow the real ones across regions."""
    from morphgen.stages import with_sample_covariates

    rng = np.random.default_rng(4)
    real, covariates, members, _ = _cohort(rng)
    sexes = np.array(["F", "M"] * 20)
    shifts = {"ventricle_ml": 8.0, "hippocampus_ml": -1.0}
    for column, shift in shifts.items():
        real.loc[sexes == "M", column] += shift
    covariates["sex"] = sexes
    samples = _samples(rng, 45, 85, 20, "s")
    sample_sex = np.array(["F", "M"] * 10)
    for column, shift in shifts.items():
        samples.loc[sample_sex == "M", column] += shift
    scores = pd.DataFrame(
        {"index": range(21), "score": 0.5, "kept": [True] * 20 + [False],
         "file": [f"s-{k}.nii.gz" for k in range(20)] + [""], "age": 60.0, "sex": [*sample_sex, "F"]}
    )  # fmt: skip
    tagged = with_sample_covariates(samples, scores.iloc[::-1])  # matched by the file's name, not the order
    assert list(tagged["sex"]) == list(sample_sex)
    effects = region_effects(real, covariates, {"age-young": tagged}, members)
    d = effects[effects.effect == "sex_d"].set_index("region")
    assert set(d["name"]) == {"M - F"} and (d["n_real"] == 40).all() and (d["n_synthetic"] == 20).all()
    by_sex = real.set_index("participant_id")
    expected = _cohen_d(by_sex.loc[sexes == "M", "ventricle_ml"], by_sex.loc[sexes == "F", "ventricle_ml"])
    assert d.loc["ventricle", "real"] == pytest.approx(expected) and expected > 1
    assert d.loc["ventricle", "synthetic"] > 1 and d.loc["hippocampus", "synthetic"] < -0.5
    volumes = region_volume_table(real, {"age-young": tagged}, members, alpha=0.05)
    row = effect_agreement(effects, volumes).set_index(["comparison", "name"]).loc[("sex_d", "M - F")]
    assert row["n_regions"] == len(REGIONS) and row["pearson_r"] > 0.8

import numpy as np
import pandas as pd
import pytest

from morphgen.errors import ConfigError
from morphgen.split import assign_split, assign_subpopulation, make_split, members


def _subjects(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(n)],
            "path": [f"/data/sub-{i:03d}.nii.gz" for i in range(n)],
            "age": rng.uniform(40, 90, n),
            "group": rng.choice(["CN", "AD"], n),
        }
    )


def test_split_is_seeded_and_order_free():
    ids = [f"s{i}" for i in range(20)]
    a = assign_split(ids, 0.25, seed=3)
    b = assign_split(list(reversed(ids)), 0.25, seed=3)
    assert a.sort_index().equals(b.sort_index())
    assert (a == "test").sum() == 5
    assert not a.equals(assign_split(ids, 0.25, seed=4))


def test_quantile_groups_are_first_and_last_bins():
    ages = pd.Series(np.arange(100, dtype=float), index=[f"s{i}" for i in range(100)])
    groups = assign_subpopulation(
        ages, "age", {"covariate": "age", "quantiles": 5, "names": ["young", "old"]}
    )
    assert set(ages[groups == "age-young"]) == set(range(0, 20))
    assert set(ages[groups == "age-old"]) == set(range(80, 100))
    assert (groups == "").sum() == 60


def test_categorical_groups_and_disjoint_members():
    cfg = {
        "age": {"covariate": "age", "quantiles": 3, "names": ["young", "old"]},
        "diagnosis": {"covariate": "group", "levels": ["CN", "AD"], "names": ["cn", "ad"]},
    }
    table = make_split(_subjects(), {"test_fraction": 0.25, "seed": 0}, cfg)
    cn, ad = members(table, "diagnosis-cn"), members(table, "diagnosis-ad")
    assert set(cn.participant_id).isdisjoint(ad.participant_id)
    assert (cn.group == "CN").all() and (ad.group == "AD").all()
    young, old = members(table, "age-young"), members(table, "age-old")
    assert young.age.max() < old.age.min()


def test_missing_covariate_is_named():
    cfg = {"sex": {"covariate": "sex", "levels": ["F", "M"], "names": ["f", "m"]}}
    with pytest.raises(ConfigError, match="'sex'"):
        make_split(_subjects(), {"test_fraction": 0.25, "seed": 0}, cfg)


def test_too_few_training_subjects_is_an_error_that_counts_every_subpopulation():
    cfg = {"age": {"covariate": "age", "quantiles": 10, "names": ["young", "old"]}}
    with pytest.raises(ConfigError) as err:
        make_split(_subjects(n=12), {"test_fraction": 0.5, "seed": 0}, cfg)
    message = str(err.value)
    # both sub-populations with their counts, what each needs, and the keys to edit
    assert "age-young: 1 training, 1 held-out" in message and "age-old: 1 training, 1 held-out" in message
    assert "at least 2 training and 1 held-out" in message and "12 subjects passed" in message
    assert "subpopulations.<key>" in message and "split.test_fraction" in message


def test_stratified_split_gives_every_subpopulation_held_out_subjects():
    cfg = {
        "age": {"covariate": "age", "quantiles": 2, "names": ["young", "old"]},
        "diagnosis": {"covariate": "group", "levels": ["CN", "AD"], "names": ["cn", "ad"]},
    }
    for seed in range(20):
        subjects = _subjects(n=12, seed=seed)
        subjects["group"] = ["CN", "AD"] * 6  # both groups big enough for 2 training + 1 held-out
        table = make_split(subjects, {"test_fraction": 0.25, "seed": seed}, cfg)
        assert (table["split"] == "test").sum() == 3
        for subpop in ("age-young", "age-old", "diagnosis-cn", "diagnosis-ad"):
            assert set(members(table, subpop)["split"]) == {"train", "test"}, (seed, subpop)

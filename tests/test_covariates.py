"""Covariates of a conditioned model: the table, min-max ranges from training subjects, flags, grids."""

import numpy as np
import pandas as pd
import pytest
import torch

from morphgen.errors import ConfigError, SubjectError
from morphgen.models.covariates import DEFAULT_COVARIATES, CovariateScaler, covariate_table

SUBJECTS = pd.DataFrame(
    {"participant_id": ["s1", "s2", "s3", "s4"], "age": [50.0, 60.0, 70.0, 80.0], "sex": ["F", "M", "M", "F"]}
)
VOLUMES = pd.DataFrame(
    {
        "participant_id": ["s4", "s3", "s2", "s1"],  # another order: joined on the id
        "ventricles_ml": [40.0, 30.0, 20.0, 10.0],
        "brain_ml": [1100.0, 1200.0, 1300.0, 1400.0],
    }
)


def test_table_takes_columns_from_the_sheet_and_the_volumes():
    table = covariate_table(SUBJECTS, VOLUMES, DEFAULT_COVARIATES)
    assert list(table.columns) == ["participant_id", "age", "sex", "ventricles", "brain"]
    assert table["ventricles"].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert table["brain"].tolist() == [1400.0, 1300.0, 1200.0, 1100.0]


def test_a_subject_without_a_value_is_named():
    volumes = VOLUMES[VOLUMES.participant_id != "s3"]
    with pytest.raises(SubjectError, match="s3.*ventricles_ml"):
        covariate_table(SUBJECTS, volumes, DEFAULT_COVARIATES)
    with pytest.raises(ConfigError, match="icv_ml"):
        covariate_table(SUBJECTS, VOLUMES, {"icv": "icv_ml"})


def test_min_max_of_the_training_subjects_and_extrapolation_flagged():
    table = covariate_table(SUBJECTS, VOLUMES, DEFAULT_COVARIATES)
    scaler = CovariateScaler.fit(table, list(DEFAULT_COVARIATES))
    x = scaler.transform(table)
    assert x.dtype == np.float32 and x.shape == (4, 4)
    np.testing.assert_allclose(x[:, 0], [0, 1 / 3, 2 / 3, 1], rtol=1e-6)  # age 50..80
    np.testing.assert_allclose(x[:, 1], [0, 1, 1, 0])  # sex: F=0, M=1
    np.testing.assert_allclose(x[:, 2], [0, 1 / 3, 2 / 3, 1], rtol=1e-6)
    assert scaler.outside(table).eq("").all()
    back = scaler.inverse(x)  # to their own units again: the same table
    assert back["sex"].tolist() == table["sex"].tolist()
    for name in ("age", "ventricles", "brain"):
        np.testing.assert_allclose(back[name], table[name], rtol=1e-6)

    asked = pd.DataFrame(
        {"age": [65.0, 90.0], "sex": ["M", "F"], "ventricles": [55.0, 5.0], "brain": [1250.0] * 2}
    )
    np.testing.assert_allclose(scaler.transform(asked)[:, 2], [1.5, -1 / 6], rtol=1e-6)
    assert scaler.outside(asked).tolist() == ["ventricles", "age,ventricles"]
    with pytest.raises(ConfigError, match="'X'"):
        scaler.transform(asked.assign(sex=["X", "F"]))
    with pytest.raises(ConfigError, match="brain"):
        scaler.transform(asked.drop(columns="brain"))


def test_scaler_goes_through_a_weights_only_file(tmp_path):
    scaler = CovariateScaler.fit(
        covariate_table(SUBJECTS, VOLUMES, DEFAULT_COVARIATES), list(DEFAULT_COVARIATES)
    )
    torch.save({"covariates": scaler.state_dict()}, tmp_path / "m.pt")
    back = CovariateScaler.from_state_dict(torch.load(tmp_path / "m.pt", weights_only=True)["covariates"])
    assert back == scaler


def test_requests_named_by_the_table_then_the_grid():
    from morphgen.models.covariates import request_ids

    grid = {"vary": ["ventricles", "brain"], "range": [0.0, 1.5], "steps": 3}
    asked = pd.DataFrame({"age": [60.0, 70.0]})
    assert request_ids(asked, grid) == [
        "request-0001",
        "request-0002",
        "ventricles-01",
        "ventricles-02",
        "ventricles-03",
        "brain-01",
        "brain-02",
        "brain-03",
    ]
    assert request_ids(asked.assign(sample_id=["a", "b"]), None) == ["a", "b"]
    with pytest.raises(ConfigError, match="unique.*'a'"):
        request_ids(asked.assign(sample_id=["a", "a"]), None)
    with pytest.raises(ConfigError, match="name files"):
        request_ids(asked.assign(sample_id=["a b", "c"]), None)


def test_a_request_leaves_out_what_stays_typical_and_a_grid_spans_the_training_range():
    from morphgen.models.covariates import request_table

    table = covariate_table(SUBJECTS, VOLUMES, DEFAULT_COVARIATES)
    scaler = CovariateScaler.fit(table, list(DEFAULT_COVARIATES))
    asked = pd.DataFrame({"sample_id": ["big"], "ventricles": [55.0], "sex": [None]})
    grid = {"vary": ["ventricles"], "range": [-0.5, 1.5], "steps": 3}
    rows = request_table(scaler, asked, grid).set_index("sample_id")
    assert list(rows.index) == ["big", "ventricles-01", "ventricles-02", "ventricles-03"]
    # left out: median age 65, brain 1250; sex has two modes (F, M): the first in order
    assert rows.loc["big", ["age", "sex", "ventricles", "brain"]].tolist() == [65.0, "F", 55.0, 1250.0]
    assert rows["vary"].tolist() == ["", "ventricles", "ventricles", "ventricles"]
    np.testing.assert_allclose(rows["ventricles"].iloc[1:].astype(float), [-5.0, 25.0, 55.0])  # 10..40 ml
    assert (rows["age"] == 65.0).all() and (rows["brain"] == 1250.0).all()
    assert scaler.outside(rows).tolist() == ["ventricles", "ventricles", "", "ventricles"]
    with pytest.raises(ConfigError, match="'ventricle'"):
        request_table(scaler, pd.DataFrame({"ventricle": [20.0]}), None)
    with pytest.raises(ConfigError, match="sex.*requests table"):
        request_table(scaler, None, {"vary": ["sex"]})
    with pytest.raises(ConfigError, match="'icv'"):
        request_table(scaler, None, {"vary": ["icv"]})

"""Subject lists from BIDS folders and TSV/CSV sheets, and the covariates the sub-populations need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from morphgen.cohort.sheet import demo_bids_dir, read_subjects, required_covariates
from morphgen.errors import ConfigError
from morphgen.nifti import save_volume

torch.set_num_threads(1)

CONFIG_YAML = Path(__file__).resolve().parents[1] / "config.yaml"


def _image(path: Path) -> Path:
    data = np.random.default_rng(0).uniform(0, 1, (6, 7, 5))
    return save_volume(path, data, np.diag([2.0, 2.0, 2.0, 1.0]))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def bids(tmp_path) -> Path:
    root = tmp_path / "bids"
    _image(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    # two sessions: the first sorted (ses-a) is used, and sessions.tsv gives the age at that session
    _image(root / "sub-02" / "ses-b" / "anat" / "sub-02_ses-b_T1w.nii.gz")
    _image(root / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_T1w.nii")
    _write(root / "sub-02" / "sub-02_sessions.tsv", "session_id\tage\nses-a\t71.5\nses-b\t73.0\n")
    # two runs in one session: the first sorted is used, with a warning
    _image(root / "sub-03" / "anat" / "sub-03_run-2_T1w.nii.gz")
    _image(root / "sub-03" / "anat" / "sub-03_run-1_T1w.nii.gz")
    _image(root / "sub-03" / "anat" / "sub-03_FLAIR.nii.gz")  # not a T1w: ignored
    # an image with no row in participants.tsv
    _image(root / "sub-04" / "anat" / "sub-04_T1w.nii.gz")
    # sub-05 is in participants.tsv but has no image
    _write(
        root / "participants.tsv",
        "participant_id\tage\tsex\tgroup\nsub-01\t60\tF\tCN\nsub-02\t70\tM\tAD\nsub-03\tn/a\tF\tCN\n"
        "sub-05\t80\tM\tAD\n",
    )
    _write(root / "dataset_description.json", '{"Name": "test", "BIDSVersion": "1.9.0"}')
    return root


def test_bids_folder(bids):
    with pytest.warns(UserWarning) as record:
        table = read_subjects({"source": "bids", "bids_dir": str(bids)})
    messages = "\n".join(str(w.message) for w in record)
    # sub-05 has no image: kept with no path, so that the input checks give it a row of its own
    assert list(table["participant_id"]) == ["sub-01", "sub-02", "sub-03", "sub-04", "sub-05"]
    paths = dict(zip(table["participant_id"], table["path"], strict=True))
    assert paths["sub-02"] == str(bids / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_T1w.nii")
    assert paths["sub-03"] == str(bids / "sub-03" / "anat" / "sub-03_run-1_T1w.nii.gz")
    assert paths["sub-05"] == ""
    assert all(Path(p).is_absolute() and Path(p).exists() for p in table["path"] if p)
    assert table.set_index("participant_id")["session"].to_dict() == {
        "sub-01": "",
        "sub-02": "ses-a",
        "sub-03": "",
        "sub-04": "",
        "sub-05": "",
    }
    ages = table.set_index("participant_id")["age"]
    assert ages["sub-01"] == 60 and ages["sub-02"] == 71.5  # the session's age overrides participants.tsv
    assert np.isnan(ages["sub-03"]) and np.isnan(ages["sub-04"])  # n/a, and no row
    assert table.set_index("participant_id").loc["sub-02", "group"] == "AD"
    assert "sub-03_run-2_T1w" in messages and "sub-03_run-1_T1w" in messages  # which run, which ignored
    assert "sub-05" in messages and "no T1w image" in messages
    assert "sub-04" in messages and "no row" in messages


def test_bids_without_sessions_has_no_session_column(tmp_path):
    root = tmp_path / "bids"
    _image(root / "sub-a" / "anat" / "sub-a_T1w.nii.gz")
    _write(root / "participants.tsv", "participant_id\tage\nsub-a\t50\n")
    table = read_subjects({"source": "bids", "bids_dir": "bids"}, base_dir=tmp_path)
    assert list(table.columns) == ["participant_id", "path", "age"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bids_errors(tmp_path, bids):
    with pytest.raises(ConfigError, match="BIDS folder not found"):
        read_subjects({"source": "bids", "bids_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="bids_dir must be set"):
        read_subjects({"source": "bids", "bids_dir": None})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no sub-"):
        read_subjects({"source": "bids", "bids_dir": str(tmp_path / "empty")})
    _write(bids / "participants.tsv", "participant_id\tage\nsub-01\t60\nsub-02\t70\nsub-01\t61\n")
    with pytest.raises(ConfigError, match="duplicate participant ids") as info:
        read_subjects({"source": "bids", "bids_dir": str(bids)})
    assert "sub-01" in str(info.value) and "participants.tsv" in str(info.value)


@pytest.mark.parametrize("suffix, sep", [(".tsv", "\t"), (".csv", ",")])
def test_sheet(tmp_path, suffix, sep):
    folder = tmp_path / "study"
    relative = _image(folder / "images" / "a.nii.gz")
    absolute = _image(tmp_path / "elsewhere" / "b.nii.gz")
    lines = [
        ["subject", "path", "age", "group"],
        ["001", "images/a.nii.gz", "55.5", "CN"],
        ["002", str(absolute), "", "AD"],
    ]
    sheet = _write(folder / f"subjects{suffix}", "\n".join(sep.join(r) for r in lines) + "\n")
    table = read_subjects({"source": "sheet", "sheet": f"study/subjects{suffix}"}, base_dir=tmp_path)
    assert list(table.columns) == ["participant_id", "path", "age", "group"]
    assert list(table["participant_id"]) == ["001", "002"]  # ids stay text: leading zeros kept
    assert list(table["path"]) == [str(relative.resolve()), str(absolute)]
    assert table["age"].iloc[0] == 55.5 and np.isnan(table["age"].iloc[1])
    assert sheet.exists()


def test_sheet_errors(tmp_path):
    with pytest.raises(ConfigError, match="subject sheet not found"):
        read_subjects({"source": "sheet", "sheet": str(tmp_path / "missing.tsv")})
    no_id = _write(tmp_path / "no_id.tsv", "name\tpath\nx\tx.nii\n")
    with pytest.raises(ConfigError, match="no id column") as info:
        read_subjects({"source": "sheet", "sheet": str(no_id)})
    assert "name, path" in str(info.value)  # says which columns it found
    no_path = _write(tmp_path / "no_path.csv", "participant_id,image\nx,x.nii\n")
    with pytest.raises(ConfigError, match="no 'path' column"):
        read_subjects({"source": "sheet", "sheet": str(no_path)})
    duplicated = _write(
        tmp_path / "dup.tsv", "id\tpath\ns1\ta.nii\ns2\tb.nii\ns1\tc.nii\ns2\td.nii\ns3\te.nii\n"
    )
    with pytest.raises(ConfigError, match="duplicate participant ids") as info:
        read_subjects({"source": "sheet", "sheet": str(duplicated)})
    message = str(info.value)
    for text in ("s1", "s2", "a.nii", "c.nii", "b.nii", "d.nii"):
        assert text in message
    assert "s3" not in message
    other = _write(tmp_path / "subjects.xlsx", "x")
    with pytest.raises(ConfigError, match=".tsv or .csv"):
        read_subjects({"source": "sheet", "sheet": str(other)})
    with pytest.raises(ConfigError, match="input.source"):
        read_subjects({"source": "xnat"})
    with pytest.raises(ConfigError, match="demo"):
        read_subjects({"source": "demo"})


def test_demo_bids_dir():
    assert demo_bids_dir("out/results") == Path("out/results") / "demo_cohort"


def test_required_covariates():
    config = yaml.safe_load(CONFIG_YAML.read_text())
    assert required_covariates(config["subpopulations"]) == {"age": "continuous", "group": "categorical"}
    assert required_covariates({}) == {} and required_covariates(None) == {}
    with pytest.raises(ConfigError, match="quantiles"):
        required_covariates({"age": {"covariate": "age"}})
    with pytest.raises(ConfigError, match="both continuous and categorical"):
        required_covariates(
            {"a": {"covariate": "x", "quantiles": 3}, "b": {"covariate": "x", "levels": [1, 2]}}
        )


def test_sheet_output_feeds_pandas_as_expected(tmp_path):
    """Covariates keep their types: numbers as numbers, categories as text."""
    _image(tmp_path / "a.nii.gz")
    sheet = _write(tmp_path / "s.tsv", "participant_id\tpath\tage\tgroup\tsite\nx\ta.nii.gz\t70\tAD\t3\n")
    table = read_subjects({"source": "sheet", "sheet": str(sheet)})
    assert pd.api.types.is_numeric_dtype(table["age"]) and table["group"].iloc[0] == "AD"


def test_a_participant_without_an_image_is_a_row_of_the_input_qc(bids, tmp_path):
    from morphgen.stages import check_inputs

    qc_path = tmp_path / "qc" / "inputs.tsv"
    with pytest.warns(UserWarning):
        config = {"source": "bids", "bids_dir": str(bids), "on_error": "exclude"}
        qc = check_inputs(config, {}, bids / "participants.tsv", qc_path)
    row = qc.set_index("participant_id").loc["sub-05"]
    assert row["status"] == "excluded" and "no T1w image" in row["reason"], row
    assert "sub-05" in qc_path.read_text()


def test_paths_are_shown_as_given_not_through_symlinks(tmp_path):
    """A DataLad dataset's images are symlinks into its annex: messages and tables keep the user's path."""
    annex = _image(tmp_path / "annex" / "MD5E-s123--abc.nii.gz")
    root = tmp_path / "dataset"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").symlink_to(annex)
    _write(root / "participants.tsv", "participant_id\tage\nsub-01\t60\n")
    _write(root / "subjects.tsv", "participant_id\tpath\tage\nsub-01\tsub-01/anat/sub-01_T1w.nii.gz\t60\n")
    given = str(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    from_bids = read_subjects({"source": "bids", "bids_dir": "dataset"}, base_dir=tmp_path)
    from_sheet = read_subjects({"source": "sheet", "sheet": "dataset/subjects.tsv"}, base_dir=tmp_path)
    assert from_bids["path"].tolist() == [given] and from_sheet["path"].tolist() == [given]

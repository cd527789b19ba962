"""Input checks on real broken files: every problem names the subject, the file and what is wrong."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from morphgen.cohort.sheet import read_subjects
from morphgen.cohort.validate import check_subjects
from morphgen.errors import ConfigError, SubjectError

torch.set_num_threads(1)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
COVARIATES = {"age": "continuous", "group": "categorical"}


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), AFFINE), str(path))
    return path


def _good(shape=(12, 14, 10)) -> np.ndarray:
    return np.random.default_rng(1).uniform(0.0, 1.0, shape)


@pytest.fixture
def broken(tmp_path) -> tuple[pd.DataFrame, dict[str, str]]:
    """One subject per problem; returns the subjects and, per subject, a word its reason must contain."""
    files = {}
    files["ok"] = _nifti(tmp_path / "ok.nii.gz", _good())
    files["singleton4d"] = _nifti(tmp_path / "singleton4d.nii.gz", _good((12, 14, 10, 1)))
    truncated = _nifti(tmp_path / "truncated.nii.gz", _good((30, 30, 30)))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    files["truncated"] = truncated
    # a converter's x*y*z*1 output, cut short
    truncated4d = _nifti(tmp_path / "truncated4d.nii.gz", _good((30, 30, 30, 1)))
    truncated4d.write_bytes(truncated4d.read_bytes()[: truncated4d.stat().st_size // 2])
    files["truncated4d"] = truncated4d
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image\n" * 40)
    files["text"] = text
    files["three_volumes"] = _nifti(tmp_path / "three.nii.gz", _good((12, 14, 10, 3)))
    nan = _good()
    nan[3, 4, 5] = np.nan
    nan[1, 1, 1] = np.inf
    files["nan"] = _nifti(tmp_path / "nan.nii.gz", nan)
    files["zeros"] = _nifti(tmp_path / "zeros.nii.gz", np.zeros((12, 14, 10)))
    files["no_file"] = tmp_path / "missing.nii.gz"
    files["no_age"] = _nifti(tmp_path / "no_age.nii.gz", _good())
    files["bad_age"] = _nifti(tmp_path / "bad_age.nii.gz", _good())
    rows = [
        {"participant_id": sid, "path": str(path), "age": 70.0, "group": "CN"} for sid, path in files.items()
    ]
    subjects = pd.DataFrame(rows)
    subjects["age"] = subjects["age"].astype(object)
    subjects.loc[subjects["participant_id"] == "no_age", "age"] = np.nan
    subjects.loc[subjects["participant_id"] == "bad_age", "age"] = "seventy"
    subjects.loc[subjects["participant_id"] == "no_age", "group"] = None
    expected = {
        "truncated": "truncated",
        "truncated4d": "truncated",
        "text": "not a readable NIfTI",
        "three_volumes": "expected a 3D volume",
        "nan": "2 voxels are NaN or Inf",
        "zeros": "image is empty",
        "no_file": "does not exist",
        "no_age": "covariate 'age' is missing",
        "bad_age": "covariate 'age' is not a number",
    }
    return subjects, expected


def test_exclude_mode_reports_each_subject(broken):
    subjects, expected = broken
    result = check_subjects(subjects, COVARIATES, "exclude", progress=False)
    assert list(result.columns) == ["participant_id", "path", "status", "reason"]
    by_id = result.set_index("participant_id")
    assert by_id.loc["ok", "status"] == "ok" and by_id.loc["ok", "reason"] == ""
    assert by_id.loc["singleton4d", "status"] == "ok"  # 4D with a singleton last axis is a 3D volume
    for sid, problem in expected.items():
        assert by_id.loc[sid, "status"] == "excluded", sid
        assert problem in by_id.loc[sid, "reason"], (sid, by_id.loc[sid, "reason"])
        assert by_id.loc[sid, "path"] == subjects.set_index("participant_id").loc[sid, "path"]
    # every problem of a subject is reported, not only the first
    assert "covariate 'group' is missing" in by_id.loc["no_age", "reason"]


def test_fail_mode_lists_every_bad_subject_with_its_file(broken):
    subjects, expected = broken
    with pytest.raises(SubjectError) as info:
        check_subjects(subjects, COVARIATES, "fail", progress=False)
    message = str(info.value)
    lines = {line.split("'")[1]: line for line in message.splitlines() if line.strip().startswith("subject")}
    assert set(lines) == set(expected)  # the good subjects are not listed
    paths = subjects.set_index("participant_id")["path"]
    for sid, problem in expected.items():
        assert paths[sid] in lines[sid] and problem in lines[sid], lines[sid]
    assert f"{len(expected)} of {len(subjects)} subjects" in message


def test_fail_mode_with_one_bad_subject_names_it(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz", _good())
    bad = _nifti(tmp_path / "bad.nii.gz", np.zeros((5, 5, 5)))
    subjects = pd.DataFrame(
        {
            "participant_id": ["s1", "s2"],
            "path": [str(good), str(bad)],
            "age": [60, 61],
            "group": ["CN", "AD"],
        }
    )
    with pytest.raises(SubjectError) as info:
        check_subjects(subjects, COVARIATES, "fail", progress=False)
    assert info.value.subject == "s2" and info.value.path == str(bad)
    assert "empty" in info.value.problem and "s2" in str(info.value) and str(bad) in str(info.value)
    # all good: nothing raised, everything ok
    result = check_subjects(subjects.iloc[:1], COVARIATES, "fail", progress=False)
    assert list(result["status"]) == ["ok"]


def test_sheet_level_problems_are_config_errors(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz", _good())
    subjects = pd.DataFrame({"participant_id": ["s1"], "path": [str(good)], "group": ["CN"]})
    with pytest.raises(ConfigError, match="no column for the covariate.*age"):
        check_subjects(subjects, COVARIATES, "exclude", progress=False)
    with pytest.raises(ConfigError, match="on_error"):
        check_subjects(subjects, {}, "skip", progress=False)


def test_from_a_sheet_end_to_end(tmp_path):
    """A sheet with a duplicate id is refused; once fixed, a blank path and a broken gzip file are named."""
    _nifti(tmp_path / "a.nii.gz", _good())
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    rows = (
        "participant_id\tpath\tage\tgroup\ns1\ta.nii.gz\t60\tCN\ns2\tb.nii.gz\t70\tAD\ns1\tc.nii.gz\t65\tCN\n"
    )
    sheet = tmp_path / "subjects.tsv"
    sheet.write_text(rows)
    with pytest.raises(ConfigError, match="duplicate participant ids") as info:
        read_subjects({"source": "sheet", "sheet": str(sheet)})
    assert "s1" in str(info.value) and "a.nii.gz" in str(info.value) and "c.nii.gz" in str(info.value)
    sheet.write_text(rows.replace("s1\tc.nii.gz", "s3\t"))
    subjects = read_subjects({"source": "sheet", "sheet": str(sheet)})
    result = check_subjects(subjects, COVARIATES, "exclude", progress=False).set_index("participant_id")
    assert result.loc["s1", "status"] == "ok"
    assert "not a readable NIfTI" in result.loc["s2", "reason"] and result.loc["s2", "path"].endswith(
        "b.nii.gz"
    )
    assert result.loc["s3", "reason"].startswith("no T1w image (no path in the sheet")

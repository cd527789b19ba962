"""A user's own BIDS data: the sheet checked against the sub-populations before anything runs, a starting
config written from it, preprocessing and the QC gate for a cohort of any size."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake

from morphgen.cli import main
from morphgen.cohort.starter import (
    check_sheet_against_subpopulations,
    describe_covariates,
    starter_config,
)
from morphgen.errors import ConfigError
from morphgen.preprocess.derivatives import find_preprocessed
from morphgen.workflow import command_line_config, replace_sections

DEFAULT_SUBPOPS = yaml.safe_load((REPO / "config.yaml").read_text())["subpopulations"]


def write_bids(root: Path, rows: list[dict], images: dict[str, np.ndarray] | None = None) -> Path:
    """A BIDS folder: participants.tsv from ``rows`` and one T1w per subject (``images`` or a blank one)."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    for row in rows:
        sid = row["participant_id"]
        (root / sid / "anat").mkdir(parents=True, exist_ok=True)
        data, affine = (images or {}).get(sid, (np.zeros((4, 4, 4), np.float32), np.eye(4)))
        nib.save(nib.Nifti1Image(data, affine), str(root / sid / "anat" / f"{sid}_T1w.nii.gz"))
    return root


def cohort_rows(n: int) -> list[dict]:
    return [
        {
            "participant_id": f"sub-{i:02d}",
            "age": 40 + 3 * i,
            "sex": "MF"[i % 2],
            "site": ["Leeds", "Oxford", "Bristol"][i % 3],
            "notes": f"scan {i}",  # free text: a value per subject, never a sub-population
        }
        for i in range(1, n + 1)
    ]


def bids_input(path: Path) -> dict:
    return {"source": "bids", "bids_dir": str(path), "on_error": "exclude"}


# ---------------------------------------------------------------- the sheet against the sub-populations


def test_a_missing_covariate_column_names_the_key_and_the_columns(tmp_path):
    bids = write_bids(tmp_path / "bids", cohort_rows(6))
    with pytest.raises(ConfigError) as err:
        check_sheet_against_subpopulations(bids_input(bids), DEFAULT_SUBPOPS)
    message = str(err.value)
    assert "subpopulations.diagnosis.covariate is 'group'" in message
    assert "age, sex, site, notes" in message and "morphgen init-config --bids" in message
    assert "subpopulations.age" not in message  # age is there


def test_a_level_that_never_occurs_is_named(tmp_path):
    bids = write_bids(tmp_path / "bids", cohort_rows(6))
    subpops = {"sex": {"covariate": "sex", "levels": ["M", "X"], "names": ["m", "x"]}}
    with pytest.raises(ConfigError, match=r"subpopulations.sex.levels: 'X' never occurs.*its values: F, M"):
        check_sheet_against_subpopulations(bids_input(bids), subpops)
    check_sheet_against_subpopulations(
        bids_input(bids), {"sex": {"covariate": "sex", "levels": ["M", "F"], "names": ["m", "f"]}}
    )


def test_a_covariate_of_the_sessions_files_counts(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "age"} for row in cohort_rows(6)]
    bids = write_bids(tmp_path / "bids", rows)
    for i, row in enumerate(rows):
        sid = row["participant_id"]
        pd.DataFrame({"session_id": ["ses-1", "ses-2"], "age": [50 + i, 52 + i]}).to_csv(
            bids / sid / f"{sid}_sessions.tsv", sep="\t", index=False
        )
    check_sheet_against_subpopulations(bids_input(bids), {"age": DEFAULT_SUBPOPS["age"]})


def test_a_missing_bids_folder_or_participants_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="input.bids_dir: BIDS folder not found"):
        check_sheet_against_subpopulations(bids_input(tmp_path / "nowhere"), DEFAULT_SUBPOPS)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigError, match="input.bids_dir: .* has no participants.tsv"):
        check_sheet_against_subpopulations(bids_input(tmp_path / "bare"), DEFAULT_SUBPOPS)


def dry_run_preprocess(workdir: Path, *config_args: str, check: bool = True):
    """``snakemake -n preprocess`` with config.yaml and ``config_args`` (more config files, --config ...)."""
    args = ["-n", "--cores", "1", "--configfile", str(REPO / "config.yaml"), *config_args, "--", "preprocess"]
    return run_snakemake(workdir, *args, check=check)


def test_snakemake_refuses_before_any_job(tmp_path):
    bids = write_bids(tmp_path / "bids", cohort_rows(6))
    proc = dry_run_preprocess(tmp_path, "--config", f"input={bids_input(bids)}", check=False)
    assert proc.returncode != 0
    assert "subpopulations.diagnosis.covariate is 'group'" in proc.stderr + proc.stdout
    assert "Job stats" not in proc.stdout  # refused while reading the config, not during the run


# ---------------------------------------------------------------- a starting config


def test_covariates_are_described_by_kind():
    table = pd.DataFrame(cohort_rows(9))
    described = {entry["column"]: entry for entry in describe_covariates(table)}
    assert set(described) == {"age", "sex", "site"}  # not the id, not free text
    assert described["age"]["kind"] == "continuous" and described["age"]["min"] == 43
    assert described["site"]["levels"] == {"Leeds": 3, "Oxford": 3, "Bristol": 3}


def test_the_starting_config_fits_the_sheet_and_replaces_the_demo_subpopulations(tmp_path):
    bids = write_bids(tmp_path / "bids", cohort_rows(9))
    text = starter_config(bids_input(bids))
    assert "age: 9 subjects, continuous, 43 to 67" in text and "sex: 9 subjects, categorical" in text
    overlay = yaml.safe_load(text)
    assert overlay["input"]["bids_dir"] == str(bids)
    assert overlay["subpopulations"]["age"] == {"covariate": "age", "quantiles": 3, "names": ["young", "old"]}
    assert overlay["subpopulations"]["sex"]["levels"] == ["F", "M"]
    assert set(overlay["subpopulations"]) == {"age", "sex", "site"}
    check_sheet_against_subpopulations(overlay["input"], overlay["subpopulations"])
    # used as the README says, on top of config.yaml: its sub-populations replace the demo's as a whole
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    proc = dry_run_preprocess(tmp_path, str(path))
    assert "check_inputs" in proc.stdout


def test_replace_sections_takes_the_last_source_whole():
    config = {"subpopulations": {"age": {"covariate": "age"}, "diagnosis": {"covariate": "group"}}, "x": 1}
    sources = [{"subpopulations": {"age": {"covariate": "age"}}}, {"x": 2}, {}]
    replace_sections(config, sources)
    assert config["subpopulations"] == {"age": {"covariate": "age"}}
    replace_sections(config, [{"x": 3}])  # nobody gives it: unchanged
    assert config["subpopulations"] == {"age": {"covariate": "age"}}


def test_command_line_sources_keep_their_order(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("subpopulations: {a: 1}\n")
    second.write_text("subpopulations: {b: 2}\n")
    sources = command_line_config([first, second], {"results": "r"})
    assert sources == [{"subpopulations": {"a": 1}}, {"subpopulations": {"b": 2}}, {"results": "r"}]


def test_init_config_command_writes_once(tmp_path, capsys):
    bids = write_bids(tmp_path / "bids", cohort_rows(6))
    out = tmp_path / "mine.yaml"
    main(["init-config", "--bids", str(bids), "-o", str(out)])
    assert yaml.safe_load(out.read_text())["input"]["source"] == "bids"
    assert "-- preprocess" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["init-config", "--bids", str(bids), "-o", str(out)])
    assert "--force" in capsys.readouterr().err


# ---------------------------------------------------------------- preprocessing and the QC gate


def mni_head(scale: float = 1.0, invert: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 brain on a 2 mm native grid, scaled about its centre; T2-like when ``invert``."""
    from scipy import ndimage as ndi

    from morphgen.templates import mni_1mm

    mni = mni_1mm()
    shape = (90, 108, 90)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.array(shape) + 1.0  # centred on the origin
    native_to_mni = np.diag([1.0 / scale] * 3 + [1.0]) @ affine
    mapping = np.linalg.inv(mni["affine"]) @ native_to_mni
    t1 = ndi.affine_transform(mni["t1"], mapping[:3, :3], offset=mapping[:3, 3], output_shape=shape, order=1)
    brain = (
        ndi.affine_transform(mni["brain"], mapping[:3, :3], offset=mapping[:3, 3], output_shape=shape) > 0.5
    )
    data = np.where(brain, (1.1 - t1) if invert else t1, 0.0) * 1000.0
    return data.astype(np.float32), affine


SMALL_CONFIG = """
preprocessing: {n4: false, skull_strip: none, registration: AffineFast, intensity_percentile: 99.5}
subpopulations:
  age: {covariate: age, quantiles: 2, names: [young, old]}
"""


@pytest.mark.slow
def test_a_three_subject_cohort_is_preprocessed_and_gated(tmp_path):
    rows = cohort_rows(3)
    images = {"sub-01": mni_head(0.95), "sub-02": mni_head(1.0), "sub-03": mni_head(1.0, invert=True)}
    bids = write_bids(tmp_path / "bids", rows, images)
    overlay = tmp_path / "small.yaml"
    overlay.write_text(f"input: {bids_input(bids)}\n" + SMALL_CONFIG)
    args = ["--cores", "2", "--configfile", str(REPO / "config.yaml"), str(overlay), "--config"]
    results = tmp_path / "results"
    run_snakemake(tmp_path, *args, f"results={results}", "--", "preprocess")
    table = pd.read_csv(results / "qc/preprocessing.tsv", sep="\t", keep_default_na=False).set_index(
        "participant_id"
    )
    assert list(table["status"]) == ["ok", "ok", "excluded"]
    assert (
        table.loc["sub-03", "reason"].startswith("QC: ")
        and "not a T1 contrast" in table.loc["sub-03", "reason"]
    )
    assert table.loc["sub-01", "qc_flag"] == "" and table.loc["sub-01", "mask_dice_mni"] > 0.9
    assert not (results / "split").exists()  # preprocessing needs no split
    log = (results / "logs/qc_table/qc_table.log").read_text()
    assert "QC sub-03: correlation" in log or "QC sub-03: not a T1" in log

    # the stage that needs sub-populations refuses, counting each of them
    proc = run_snakemake(
        tmp_path, *args, f"results={results}", "--", f"{results}/split/subjects.tsv", check=False
    )
    assert proc.returncode != 0
    split_log = (results / "logs/split/split.log").read_text()
    assert "2 subjects passed the QC gate" in split_log and "age-young: " in split_log

    # qc.gate: warn keeps the subject, flagged; only the QC table is redone
    stamp = find_preprocessed(results, "sub-01").stat().st_mtime_ns
    run_snakemake(tmp_path, *args, f"results={results}", "qc={gate: warn}", "--", "preprocess")
    warned = pd.read_csv(results / "qc/preprocessing.tsv", sep="\t", keep_default_na=False).set_index(
        "participant_id"
    )
    assert list(warned["status"]) == ["ok", "ok", "ok"]
    assert warned.loc["sub-03", "qc_flag"] == table.loc["sub-03", "qc_flag"] != ""
    assert find_preprocessed(results, "sub-01").stat().st_mtime_ns == stamp


def test_preprocessed_files_have_bids_derivatives_names(tmp_path):
    from morphgen.preprocess.derivatives import dataset_description, preprocessed_patterns, resolution_label

    assert [resolution_label(v) for v in (4.0, 1.0, 1.5)] == ["4mm", "1mm", "1p5mm"]  # labels: alphanumeric
    paths = preprocessed_patterns("r", {"voxel_size": 1.0, "shape": [160, 224, 160]})
    assert paths["image"].format(subject="sub-01") == (
        "r/preprocessed/sub-01/anat/sub-01_space-MNI152NLin2009aSym_res-1mm_desc-preproc_T1w.nii.gz"
    )
    assert (
        paths["mask"]
        .format(subject="sub-01")
        .endswith("anat/sub-01_space-MNI152NLin2009aSym_res-1mm_desc-brain_mask.nii.gz")
    )
    description = dataset_description("/data/bids", {"voxel_size": 4.0, "shape": [48, 64, 48]}, {"n4": True})
    assert (
        description["DatasetType"] == "derivative"
        and "4 mm 48x64x48" in description["GeneratedBy"][0]["Description"]
    )
    image = Path(
        preprocessed_patterns(str(tmp_path), {"voxel_size": 4.0, "shape": [8, 8, 8]})["image"].format(
            subject="sub-02"
        )
    )
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    assert find_preprocessed(tmp_path, "sub-02") == image
    with pytest.raises(FileNotFoundError, match="mask of sub-02"):
        find_preprocessed(tmp_path, "sub-02", "mask")

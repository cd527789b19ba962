import pandas as pd
import pytest

from morphgen.errors import ChecksumError, SubjectError
from morphgen.stages import (
    clear_stale_checkpoints,
    finish_training,
    image_map,
    modulated_maps,
    pick,
    pretrained_digest,
    subpop_of,
)
from morphgen.tsv import concat_tsvs, read_tsv, write_tsv
from morphgen.workflow import batches


def test_checkpoints_survive_a_rerun_with_the_same_settings_only(tmp_path):
    clear_stale_checkpoints(tmp_path, {"epochs": 5})
    (tmp_path / "checkpoints" / "last.pt").write_text("state")
    clear_stale_checkpoints(tmp_path, {"epochs": 5})
    assert (tmp_path / "checkpoints" / "last.pt").exists()  # interrupted run: resume
    clear_stale_checkpoints(tmp_path, {"epochs": 6})
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # other settings: start afresh


def test_finished_training_drops_its_resume_state(tmp_path):
    clear_stale_checkpoints(tmp_path, {})
    (tmp_path / "checkpoints" / "last.pt").write_text("state")
    finish_training(tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_shipped_autoencoder_is_used_only_with_its_configured_sha256(tmp_path):
    import hashlib

    model = tmp_path / "ae.pt"
    model.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert pretrained_digest(model, digest) == digest == pretrained_digest(model, None)
    with pytest.raises(ChecksumError, match=r"pretraining\.checkpoint.*ae\.pt"):
        pretrained_digest(model, "0" * 64)


def test_ids_from_file_names():
    paths = [
        "r/preprocessed/sub-01/sub-01_space-MNI152_T1w.nii.gz",
        "r/preprocessed/sub-02/sub-02_space-MNI152_desc-brain_mask.nii.gz",
        "r/samples/age-old/sample-0003.nii.gz",
    ]
    assert list(image_map(paths)) == ["sub-01", "sub-02", "sample-0003"]
    assert subpop_of("r/subpopulations/age-old.tsv") == "age-old"


def test_image_map_takes_a_folder_or_one_path(tmp_path):
    for name in ("sub-02.nii.gz", "sub-01.nii.gz", "notes.txt"):
        (tmp_path / name).write_text("")
    assert image_map(str(tmp_path)) == {
        "sub-01": tmp_path / "sub-01.nii.gz",
        "sub-02": tmp_path / "sub-02.nii.gz",
    }
    assert list(image_map(tmp_path / "sub-02.nii.gz")) == ["sub-02"]
    assert subpop_of("r/samples/age-old/sample-0003.nii.gz") == "age-old"


def test_finetune_validation_is_a_seeded_subset_of_the_training_ids():
    from morphgen.stages import finetune_validation

    ids = [f"sub-{i:02d}" for i in range(20)]
    held = finetune_validation(ids, 0.2, seed=3)
    assert len(held) == 4 and set(held) <= set(ids)
    assert finetune_validation(list(reversed(ids)), 0.2, seed=3) == held  # order does not matter
    assert finetune_validation(ids, 0.2, seed=4) != held
    assert len(finetune_validation(ids[:3], 0.01, seed=3)) == 1  # at least one, never all


def test_fine_tuning_on_part_of_the_training_split():
    from morphgen.errors import ConfigError
    from morphgen.stages import finetune_subjects

    train = pd.DataFrame(
        {"participant_id": ["s1", "s2", "s3", "s4"], "group": ["CN", "AD", "AD", "CN"], "site": [1, 2, 1, 2]}
    )
    assert finetune_subjects(train, None) == ["s1", "s2", "s3", "s4"]
    assert finetune_subjects(train, {"group": ["AD"]}) == ["s2", "s3"]
    assert finetune_subjects(train, {"group": "AD", "site": [1, 2]}) == ["s2", "s3"]  # numbers read as text
    with pytest.raises(ConfigError, match=r"pretraining.finetune.where.*no column 'diagnosis'"):
        finetune_subjects(train, {"diagnosis": ["AD"]})
    with pytest.raises(ConfigError, match="selects 1 of the 4"):
        finetune_subjects(train, {"group": ["AD"], "site": [2]})


def test_pretraining_split_keeps_usable_subjects_only(tmp_path):
    import pytest

    from morphgen.errors import ConfigError
    from morphgen.stages import pretraining_split
    from morphgen.tsv import read_tsv

    rows = [f"sub-{i:02d}\ta/sub-{i:02d}.nii.gz" for i in range(10)]
    (tmp_path / "sheet.tsv").write_text("participant_id\tpath\n" + "\n".join(rows) + "\n")
    statuses = ["ok"] * 9 + ["excluded"]
    qc = [f"sub-{i:02d}\ta\t{s}\t" for i, s in enumerate(statuses)]
    (tmp_path / "qc.tsv").write_text("participant_id\tpath\tstatus\treason\n" + "\n".join(qc) + "\n")
    cfg = {"source": "sheet", "sheet": str(tmp_path / "sheet.tsv"), "on_error": "exclude"}
    pretraining_split(cfg, 0.3, 0, tmp_path / "sheet.tsv", tmp_path / "qc.tsv", tmp_path / "out.tsv")
    table = read_tsv(tmp_path / "out.tsv")
    assert "sub-09" not in set(table["participant_id"]) and len(table) == 9
    assert (table["split"] == "val").sum() == 3 and set(table["split"]) == {"train", "val"}
    (tmp_path / "qc.tsv").write_text("participant_id\tpath\tstatus\treason\nsub-00\ta\tok\t\n")
    with pytest.raises(ConfigError, match="at least 2"):
        pretraining_split(cfg, 0.3, 0, tmp_path / "sheet.tsv", tmp_path / "qc.tsv", tmp_path / "o2.tsv")


def test_regions_come_from_the_onnx_labels_or_else_the_atlas():
    from morphgen.errors import ConfigError
    from morphgen.stages import regions_source

    assert regions_source({}, {"backend": "atropos"}) == "atlas"
    assert regions_source({"regions": {"source": "auto"}}, {"backend": "onnx"}) == "segmentation"
    assert regions_source({"regions": {"source": "atlas"}}, {"backend": "onnx"}) == "atlas"
    with pytest.raises(ConfigError, match="only the onnx back-end"):
        regions_source({"regions": {"source": "segmentation"}}, {"backend": "atropos"})


@pytest.mark.parametrize("n, size", [(12, 5), (10, 5), (3, 50), (1, 1)])
def test_batches_take_every_id_once_in_order(n, size):
    ids = [f"sub-{i:03d}" for i in range(n)]
    runs = batches(ids, size)
    assert list(runs) == [f"{k:04d}" for k in range(1, len(runs) + 1)]
    assert [i for run in runs.values() for i in run] == ids
    assert all(1 <= len(run) <= size for run in runs.values())
    assert len(runs) == -(-n // size)


def test_batches_refuse_an_empty_size():
    with pytest.raises(ValueError, match="at least 1"):
        batches(["a"], 0)


def test_batch_tables_join_in_order_with_every_column(tmp_path):
    first = pd.DataFrame({"participant_id": ["007", "002"], "gm_ml": [600.5, 610.25]})
    second = pd.DataFrame(
        {"participant_id": ["010"], "gm_ml": [float("nan")], "segmentation_error": ["blank image"]}
    )
    paths = [write_tsv(first, tmp_path / "b1.tsv"), write_tsv(second, tmp_path / "b2.tsv")]
    joined = concat_tsvs(paths, tmp_path / "all.tsv")
    back = read_tsv(tmp_path / "all.tsv")
    assert list(back["participant_id"]) == ["007", "002", "010"]  # ids stay text
    assert list(back.columns) == ["participant_id", "gm_ml", "segmentation_error"]
    assert back["gm_ml"].iloc[:2].tolist() == [600.5, 610.25] and back["gm_ml"].isna().iloc[2]
    assert back["segmentation_error"].isna().tolist() == [True, True, False]
    assert len(joined) == 3
    with pytest.raises(ValueError, match="no tables"):
        concat_tsvs([], tmp_path / "none.tsv")


def test_pick_keeps_the_batch_order_and_names_a_missing_subject(tmp_path):
    images = {i: tmp_path / f"{i}_recon.nii.gz" for i in ("sub-1", "sub-2", "sub-3")}
    assert list(pick(images, ["sub-3", "sub-1"], tmp_path)) == ["sub-3", "sub-1"]
    with pytest.raises(SubjectError, match="sub-9") as err:
        pick(images, ["sub-1", "sub-9"], tmp_path)
    assert err.value.subject == "sub-9" and err.value.path == str(tmp_path)


def test_modulated_maps_are_found_across_batch_folders(tmp_path):
    for batch, ids in {"batch-0001": ["sub-1", "sub-2"], "batch-0002": ["sub-3"]}.items():
        (tmp_path / batch).mkdir()
        for i in ids:
            (tmp_path / batch / f"{i}_mwp1.nii.gz").touch()
            (tmp_path / batch / f"{i}_jacobian.nii.gz").touch()
    found = modulated_maps([tmp_path / "batch-0001", tmp_path / "batch-0002"])
    assert found == {
        "sub-1": tmp_path / "batch-0001/sub-1_mwp1.nii.gz",
        "sub-2": tmp_path / "batch-0001/sub-2_mwp1.nii.gz",
        "sub-3": tmp_path / "batch-0002/sub-3_mwp1.nii.gz",
    }


class _Job:
    """What ``logged`` reads of a rule script's ``snakemake`` object."""

    def __init__(self, log):
        self.log = [str(log)]
        self.threads = 1
        self.rule = "preprocess_subject"
        self.wildcards = {"subject": "sub-01"}


def test_what_libraries_and_children_print_goes_to_the_rule_log(tmp_path, capfd):
    import os
    import subprocess

    from morphgen.workflow import logged

    log = tmp_path / "logs" / "job.log"
    with logged(_Job(log)):
        print("from python")
        os.write(2, b"WARNING: In itkImageToImageMetricv4.hxx: too many samples outside\n")  # as ITK does
        subprocess.run(["sh", "-c", "echo from a child >&2"], check=True)
    os.write(2, b"after the job\n")
    text = log.read_text()
    for line in ("from python", "itkImageToImageMetricv4", "from a child", "finished in"):
        assert line in text
    captured = capfd.readouterr()
    assert "itk" not in captured.err and "from a child" not in captured.err
    assert "after the job" in captured.err and "after the job" not in text  # the terminal is given back


def test_a_failing_job_keeps_its_traceback_in_the_log_and_gives_the_terminal_back(tmp_path, capfd):
    import os

    from morphgen.workflow import logged

    log = tmp_path / "job.log"
    with pytest.raises(ValueError), logged(_Job(log)):
        raise ValueError("registration diverged")
    os.write(1, b"terminal again\n")
    assert "registration diverged" in log.read_text()
    assert "terminal again" in capfd.readouterr().out


def test_a_failed_preprocessing_is_an_excluded_row_when_excluding(tmp_path, monkeypatch):
    import nibabel as nib

    import morphgen.preprocess as preprocess
    from morphgen.preprocess.qc import apply_qc_gate, collect_qc
    from morphgen.stages import preprocess as preprocess_stage

    def fails(subject, in_path, *args, **kwargs):
        raise SubjectError(subject, in_path, "preprocessing step 'register' failed: ITK exception")

    monkeypatch.setattr(preprocess, "preprocess_subject", fails)
    space = {"voxel_size": 4.0, "shape": [12, 16, 12]}
    names = ("out_image", "out_mask", "out_qc_png", "out_qc_tsv")
    outputs = {
        name: tmp_path / f"{name}.{'tsv' if 'tsv' in name else 'png' if 'png' in name else 'nii.gz'}"
        for name in names
    }
    with pytest.raises(SubjectError, match="ITK exception"):
        preprocess_stage("sub-09", "/data/sub-09_T1w.nii.gz", space, {}, "fail", outputs)
    assert not any(p.exists() for p in outputs.values())
    row = preprocess_stage("sub-09", "/data/sub-09_T1w.nii.gz", space, {}, "exclude", outputs)
    assert row["preprocessing_error"].endswith("ITK exception")
    image = nib.load(str(outputs["out_image"]))
    assert image.shape == (12, 16, 12) and not image.get_fdata().any()
    table = collect_qc([outputs["out_qc_tsv"]])
    table.insert(1, "path", "/data/sub-09_T1w.nii.gz")
    table["status"], table["reason"] = "ok", ""
    for gate in ("exclude", "warn"):  # a failure is never kept
        gated = apply_qc_gate(table, {"gate": gate})
        assert gated.loc[0, "status"] == "excluded"
        assert (
            gated.loc[0, "reason"]
            == "preprocessing failed: preprocessing step 'register' failed: ITK exception"
        )

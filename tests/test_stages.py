from morphgen.stages import clear_stale_checkpoints, finish_training, image_map, subpop_of


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


def test_ids_from_file_names():
    paths = [
        "r/preprocessed/sub-01/sub-01_space-MNI152_T1w.nii.gz",
        "r/preprocessed/sub-02/sub-02_space-MNI152_desc-brain_mask.nii.gz",
        "r/samples/age-old/sample-0003.nii.gz",
    ]
    assert list(image_map(paths)) == ["sub-01", "sub-02", "sample-0003"]
    assert subpop_of("r/subpopulations/age-old.tsv") == "age-old"
    assert subpop_of("r/samples/age-old/sample-0003.nii.gz") == "age-old"

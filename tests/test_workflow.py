"""The Snakemake workflow itself: lint, and one real end-to-end run of the DAG on a small simulated cohort."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from morphgen.space import Grid

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(workdir: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def test_lint_is_clean(tmp_path):
    proc = _snakemake(tmp_path, "--configfile", str(REPO / "config.yaml"), "--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def _config_args(results: Path) -> list[str]:
    return [
        "--configfile",
        str(REPO / "config.yaml"),
        str(REPO / "tests/data/config_e2e.yaml"),
        "--config",
        f"results={results}",
    ]


def test_invalid_config_is_refused(tmp_path):
    proc = _snakemake(
        tmp_path, *_config_args(tmp_path / "r"), "input={'source': 'nowhere'}", "-n", check=False
    )
    assert proc.returncode != 0
    assert "source" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    results = work / "results"
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    _snakemake(work, *_config_args(results), "--cores", "2", "all")
    return work, results


@pytest.mark.slow
def test_end_to_end_outputs_are_sane(e2e_run):
    work, R = e2e_run
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    grid = Grid.from_config(cfg["space"])
    sheet = pd.read_csv(R / "demo_cohort/participants.tsv", sep="\t")
    assert sheet["simulated"].astype(str).str.lower().eq("true").all()

    subjects = pd.read_csv(R / "split/subjects.tsv", sep="\t")
    assert set(subjects["split"]) == {"train", "test"}
    for key in ("age", "diagnosis"):
        a, b = (pd.read_csv(p, sep="\t") for p in sorted((R / "subpopulations").glob(f"{key}-*.tsv")))
        assert len(a) and len(b) and set(a.participant_id).isdisjoint(b.participant_id)

    for sid in subjects["participant_id"]:
        img = nib.load(R / f"preprocessed/{sid}/{sid}_space-MNI152_T1w.nii.gz")
        assert img.shape == grid.shape
        np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)
        data = img.get_fdata()
        assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1 and data.max() > 0.5
        assert (R / f"preprocessed/{sid}/{sid}_qc.png").stat().st_size > 1000

    for subpop_dir in sorted((R / "samples").iterdir()):
        scores = pd.read_csv(subpop_dir / "scores.tsv", sep="\t")
        assert len(scores) == 4 and scores["kept"].astype(bool).sum() == 2
        for f in sorted(subpop_dir.glob("sample-*.nii.gz")):
            img = nib.load(f)
            assert img.get_data_dtype() == np.float32
            np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)
            assert np.isfinite(img.get_fdata()).all()

    real = pd.read_csv(R / "volumes/real.tsv", sep="\t")
    assert len(real) == len(subjects)
    # plausible adult brains after affine normalisation to MNI (ml)
    assert real["brain_ml"].between(1000, 2500).all()
    assert real["gm_ml"].between(300, 1300).all() and real["wm_ml"].between(200, 1000).all()

    t1 = pd.read_csv(R / "tables/table1_fidelity.tsv", sep="\t")
    assert set(t1["source"]) == {"real", "synthetic"}
    assert np.isfinite(t1[["bmmd2_mean", "bmmd2_sd", "msssim_mean"]].to_numpy()).all()
    # one pair (two kept samples) has no standard deviation; more pairs must have one
    assert (np.isfinite(t1["msssim_sd"]) | (t1["msssim_pairs"] == 1)).all()
    t2 = pd.read_csv(R / "tables/table2_volumes.tsv", sep="\t")
    assert len(t2) == 16  # 4 sub-populations x (gm, wm, csf, ventricles)
    tested = (t2["n_real"] >= 2) & (t2["n_synthetic"] >= 2)
    assert t2.loc[tested, "p"].between(0, 1).all() and t2.loc[~tested, "p"].isna().all()
    for tsv in (R / "volumes/synthetic").glob("*.tsv"):
        synth = pd.read_csv(tsv, sep="\t", na_values=["n/a"])
        assert len(synth) == 2
        failed = synth["gm_ml"].isna()
        if failed.any():  # a sample that cannot be segmented is kept in the table with the reason
            assert synth.loc[failed, "segmentation_error"].str.contains("sample-").all()
    recon = pd.read_csv(R / "tables/reconstruction_volumes.tsv", sep="\t")
    n_test = int((subjects["split"] == "test").sum())
    assert list(recon["tissue"]) == ["gm", "wm", "csf", "ventricles"] and (recon["n"] == n_test).all()
    assert (recon["mape_percent"] >= recon["bias_percent"].abs() - 1e-9).all()
    for png in ["volumes.png", "loss_autoencoder.png", "volumetry_truth.png", "reconstruction_volumes.png"]:
        assert (R / "figures" / png).stat().st_size > 1000
    assert len(list((R / "figures").glob("samples_*.png"))) == 4
    # every rule left a log and a benchmark
    assert (R / "logs/train_autoencoder/train_autoencoder.log").stat().st_size > 0
    assert (R / "benchmarks/train_autoencoder/train_autoencoder.tsv").exists()


@pytest.mark.slow
def test_forcerun_redoes_only_the_stage_and_its_dependents(e2e_run):
    work, R = e2e_run
    proc = _snakemake(work, *_config_args(R), "-n", "--forcerun", "segment_real", "--quiet", "rules", "all")
    out = proc.stdout + proc.stderr
    planned = {line.split()[0] for line in out.splitlines() if line.strip() and line.split()[-1].isdigit()}
    planned -= {"total", "job"}
    assert planned == {
        "segment_real",
        "table2_volumes",
        "volumetry_truth",
        "reconstruction_volumes",
        "all",
    }, out


@pytest.mark.slow
def test_complete_run_has_nothing_left_to_do(e2e_run):
    work, R = e2e_run
    proc = _snakemake(work, *_config_args(R), "-n", "all")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_two_dataset_training_pretrains_then_fine_tunes(e2e_run, tmp_path):
    """Paper §3.2 as DAG stages: cohort A trains the autoencoder, the main cohort fine-tunes it."""
    import torch
    import yaml

    work, results = e2e_run
    R = tmp_path / "results"
    shutil.copytree(results, R)  # the main cohort's preprocessing is reused, not redone
    shutil.rmtree(R / "models")  # a copy has no run metadata, so a changed setting would not show
    overlay = {
        "pretraining": {
            "enabled": True,
            "demo": {"n_subjects": 5, "seed": 3, "voxel_size": 2.0, "patient_fraction": 0.0},
            "validation_fraction": 0.2,
            "finetune": {"epochs": 6, "patience": 2, "validation_fraction": 0.25},
        }
    }
    (tmp_path / "pretraining.yaml").write_text(yaml.safe_dump(overlay))
    args = _config_args(R)
    args[3:3] = [str(tmp_path / "pretraining.yaml")]
    target = str(R / "models/autoencoder/model.pt")
    plan = _snakemake(work, *args, "-n", "--quiet", "rules", "--", target).stdout
    assert "pretrain_autoencoder" in plan and "train_autoencoder" in plan
    images = sorted((R / "preprocessed").glob("*/*_T1w.nii.gz"))
    before = [p.stat().st_mtime_ns for p in images]
    _snakemake(work, *args, "--cores", "2", "--", target)
    assert [p.stat().st_mtime_ns for p in images] == before  # the main cohort was not preprocessed again
    assert len(list((R / "pretraining/preprocessed").glob("*/*_T1w.nii.gz"))) == 5

    cohort_a = pd.read_csv(R / "pretraining/split/subjects.tsv", sep="\t")
    assert len(cohort_a) == 5 and set(cohort_a["split"]) == {"train", "val"}
    pretrained = R / "models/autoencoder_pretrained/model.pt"
    assert (
        torch.load(pretrained, weights_only=True)["info"]["n_train"] == (cohort_a["split"] == "train").sum()
    )
    info = torch.load(R / "models/autoencoder/model.pt", weights_only=True)["info"]
    assert info["fine_tuned_from"] == str(pretrained)
    assert 1 <= info["best_epoch"] <= info["epochs"] <= 6
    train_b = pd.read_csv(R / "split/subjects.tsv", sep="\t").query("split == 'train'")
    assert info["n_train"] < len(train_b)  # a validation fraction of the training split was held out
    assert not (R / "models/autoencoder/checkpoints").exists()

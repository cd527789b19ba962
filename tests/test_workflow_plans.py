"""The workflow's plans, checked by dry runs: lint, a refused configuration, which stages a configuration
brings in. A module of its own, so that these quick runs do not wait behind the shared end-to-end run."""

from conftest import REPO
from conftest import e2e_config_args as _config_args
from conftest import run_snakemake as _snakemake


def test_lint_is_clean(tmp_path):
    proc = _snakemake(tmp_path, "--configfile", str(REPO / "config.yaml"), "--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_invalid_config_is_refused(tmp_path):
    proc = _snakemake(
        tmp_path, *_config_args(tmp_path / "r"), "input={'source': 'nowhere'}", "-n", check=False
    )
    assert proc.returncode != 0
    assert "source" in proc.stdout + proc.stderr


def test_a_shipped_autoencoder_takes_the_place_of_pretraining(tmp_path):
    """pretraining.checkpoint: the plan fine-tunes the shipped file and has no cohort A to simulate."""
    import yaml

    shipped = tmp_path / "shipped.pt"
    shipped.write_bytes(b"weights")
    target = str(tmp_path / "r/models/autoencoder/model.pt")
    plans = {}
    for name, checkpoint in (("pretrain", None), ("shipped", {"path": str(shipped), "sha256": "ab" * 32})):
        overlay = tmp_path / f"{name}.yaml"
        overlay.write_text(yaml.safe_dump({"pretraining": {"enabled": True, "checkpoint": checkpoint}}))
        args = _config_args(tmp_path / "r")
        args[3:3] = [str(overlay)]
        plans[name] = _snakemake(tmp_path, *args, "-n", "--quiet", "rules", "--", target).stdout
    assert "pretraining_demo_cohort" in plans["pretrain"] and "pretraining_split" in plans["pretrain"]
    assert "pretraining_demo_cohort" not in plans["shipped"] and "pretraining_split" not in plans["shipped"]
    assert "train_autoencoder" in plans["shipped"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pretraining": {"enabled": True, "checkpoint": {"path": str(shipped)}}}))
    args = _config_args(tmp_path / "r")
    args[3:3] = [str(bad)]
    proc = _snakemake(tmp_path, *args, "-n", check=False)
    assert proc.returncode != 0 and "sha256" in proc.stdout + proc.stderr
    # a configured file that is not there yet (the demo's before `make demo-pretrain`): say how to make it
    absent = tmp_path / "absent.yaml"
    checkpoint = {"path": str(tmp_path / "not-yet.pt"), "sha256": "ab" * 32}
    absent.write_text(yaml.safe_dump({"pretraining": {"enabled": True, "checkpoint": checkpoint}}))
    args = _config_args(tmp_path / "r")
    args[3:3] = [str(absent)]
    proc = _snakemake(tmp_path, *args, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "not-yet.pt does not exist" in out and "make demo-pretrain" in out


def test_a_prior_that_reads_the_autoencoder_takes_it_as_an_input(tmp_path):
    """Seed 002's prior codes the latents again with the autoencoder's codebook: train_prior depends on it,
    and the default family's does not."""
    target = str(tmp_path / "r/models/prior/cohort/model.pt")
    args = _config_args(tmp_path / "r")
    args[3:3] = [str(REPO / "configs/demo/brainsynth.yaml")]
    plan = _snakemake(tmp_path, *args, "-n", "--", target).stdout
    job = plan[plan.index("rule train_prior:") :].split("\n\n")[0]
    assert "models/autoencoder/model.pt" in job.split("output:")[0]
    target = str(tmp_path / "r/models/prior/age-young/model.pt")
    plan = _snakemake(tmp_path, *_config_args(tmp_path / "r"), "-n", "--", target).stdout
    job = plan[plan.index("rule train_prior:") :].split("\n\n")[0]
    assert "models/autoencoder/model.pt" not in job.split("output:")[0]

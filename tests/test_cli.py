import hashlib
from pathlib import Path

import pytest

from morphgen.cli import main


def test_families_lists_the_default_family(capsys):
    main(["families"])
    assert "vqvae_transformer" in capsys.readouterr().out.split()


def test_sha256_matches_hashlib(tmp_path, capsys):
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"morphgen" * 1000)
    main(["sha256", str(path)])
    assert capsys.readouterr().out.split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_check_inputs_reports_a_bad_subject_and_exits_1(tmp_path, capsys):
    sheet = tmp_path / "subjects.tsv"
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    sheet.write_text("participant_id\tpath\tage\nsub-01\tbroken.nii.gz\t60\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"input: {{source: sheet, sheet: {sheet}, on_error: exclude}}\n"
        "subpopulations: {age: {covariate: age, quantiles: 2, names: [young, old]}}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["check-inputs", "--config", str(config)])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "sub-01" in out and "excluded" in out and "broken.nii.gz" in out


def _ship_config(tmp_path, sha256):
    config, shipped = tmp_path / "config.yaml", tmp_path / "shipped/ae.pt"
    config.write_text(
        f"pretraining: {{enabled: true, checkpoint: {{path: {shipped}, sha256: '{sha256}'}}}}\n"
    )
    return config


def test_ship_autoencoder_copies_and_says_when_it_reproduced_the_shipped_file(tmp_path, capsys):
    trained = tmp_path / "model.pt"
    trained.write_bytes(b"weights" * 100)
    digest = hashlib.sha256(trained.read_bytes()).hexdigest()
    main(["ship-autoencoder", str(trained), "--config", str(_ship_config(tmp_path, digest))])
    assert (tmp_path / "shipped/ae.pt").read_bytes() == trained.read_bytes()
    assert "reproduced bit for bit" in capsys.readouterr().out


def test_ship_autoencoder_exits_1_and_names_the_new_sha256_when_it_differs(tmp_path, capsys):
    trained = tmp_path / "model.pt"
    trained.write_bytes(b"other weights")
    digest = hashlib.sha256(trained.read_bytes()).hexdigest()
    with pytest.raises(SystemExit) as exit_info:
        main(["ship-autoencoder", str(trained), "--config", str(_ship_config(tmp_path, "0" * 64))])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "pretraining.checkpoint.sha256" in err and digest in err
    assert (tmp_path / "shipped/ae.pt").read_bytes() == trained.read_bytes()


def test_ship_autoencoder_needs_a_configured_checkpoint(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("pretraining: {enabled: false}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["ship-autoencoder", str(tmp_path / "model.pt"), "--config", str(config)])
    assert exit_info.value.code == 2 and "pretraining.checkpoint" in capsys.readouterr().err


def test_the_shipped_demo_autoencoder_is_the_file_its_configuration_names():
    """models/demo/autoencoder_fsq.pt: the sha256 in configs/demo/pretrained.yaml, and its network."""
    import yaml

    from morphgen.models.autoencoders.checkpoint import load_autoencoder
    from morphgen.weights import sha256sum

    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "configs/demo/pretrained.yaml").read_text())
    checkpoint = cfg["pretraining"]["checkpoint"]
    path = repo / checkpoint["path"]
    assert sha256sum(path) == checkpoint["sha256"]
    _, _, network = load_autoencoder(path)
    ae = cfg["model"]["autoencoder"]
    assert network["quantiser"] == "fsq" and list(network["fsq_levels"]) == ae["fsq_levels"]
    assert list(network["latent_shape"])[-3:] == [6, 8, 6]  # 288 tokens on the demo's 48 x 64 x 48 grid

import hashlib

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

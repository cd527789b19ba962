"""Same configuration and seed, same results: a second run of the DAG on CPU gives byte-identical token
arrays, synthetic images and tables; another seed does not.

The first run is the end-to-end run the workflow tests share (conftest.e2e_run). To keep the added time small
the second run starts from the first run's simulated cohort and preprocessed images, except one training
subject, which it preprocesses again from the raw scan; from there it trains the autoencoder afresh, encodes
every subject, trains one sub-population's prior, samples it and segments the samples.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, e2e_config_args, run_snakemake

from morphgen.preprocess.derivatives import find_preprocessed

pytestmark = pytest.mark.slow

SUBPOP = "age-young"
UPSTREAM = ("demo_cohort", "qc", "split", "subpopulations", "preprocessed")  # what the second run reuses


def _targets(results: Path) -> list[str]:
    return [
        str(results / "latents/tokens"),
        str(results / f"samples/{SUBPOP}/scores.tsv"),
        str(results / f"volumes/synthetic/{SUBPOP}.tsv"),
    ]


def _copy(src: Path, dst: Path, parts) -> None:
    """Copy result folders with their times, so Snakemake sees them as up to date."""
    for part in parts:
        shutil.copytree(src / part, dst / part)


@pytest.fixture(scope="module")
def runs(e2e_run, tmp_path_factory) -> dict:
    _, first = e2e_run
    work = tmp_path_factory.mktemp("second")
    second = work / "results"
    _copy(first, second, UPSTREAM)
    members = pd.read_csv(second / f"subpopulations/{SUBPOP}.tsv", sep="\t", dtype={"participant_id": str})
    redone = members.loc[members["split"] == "train", "participant_id"].iloc[0]
    shutil.rmtree(second / "preprocessed" / redone)
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    run_snakemake(work, *e2e_config_args(second), "--cores", "2", "--", *_targets(second))

    # another seed: the prior and sampling of the sub-population again, from the same tokens
    other_work = tmp_path_factory.mktemp("other_seed")
    other = other_work / "results"
    _copy(second, other, (*UPSTREAM, "models/autoencoder", "latents"))
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    overlay = other_work / "seed.yaml"
    overlay.write_text(yaml.safe_dump({"model": {"seed": cfg["model"]["seed"] + 1}}))
    args = e2e_config_args(other)
    args[3:3] = [str(overlay)]
    run_snakemake(other_work, *args, "--cores", "2", "--", str(other / f"samples/{SUBPOP}/scores.tsv"))
    return {"first": first, "second": second, "other": other, "redone": redone}


def _files(folder: Path, pattern: str = "*") -> list[str]:
    """Paths below ``folder`` of its files (not Snakemake's hidden ``.snakemake_timestamp``)."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")
    )


def _without_times(tsv: Path) -> pd.DataFrame:
    """A table without its run-time columns (``seconds``, ``seconds_<step>``), read as text."""
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    return table.drop(columns=[c for c in table.columns if c == "seconds" or c.startswith("seconds_")])


def _assert_same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes(), f"{b} differs from {a}"


def _assert_same_volume(a: Path, b: Path) -> None:
    """The same voxels (exactly), affine and header; then the same file (nibabel's gzip holds no time)."""
    img_a, img_b = nib.load(a), nib.load(b)
    assert img_a.get_data_dtype() == img_b.get_data_dtype(), b
    np.testing.assert_array_equal(np.asanyarray(img_a.dataobj), np.asanyarray(img_b.dataobj), err_msg=str(b))
    np.testing.assert_array_equal(img_a.affine, img_b.affine, err_msg=str(b))
    assert img_a.header.binaryblock == img_b.header.binaryblock, b
    _assert_same_bytes(a, b)


def _tensors(blob, prefix=""):
    """Every tensor of a nested checkpoint by its key path (the files themselves name their archive after the
    temporary file they were written to, so their bytes differ)."""
    if isinstance(blob, torch.Tensor):
        return {prefix: blob}
    if isinstance(blob, dict):
        return {k: v for key, value in blob.items() for k, v in _tensors(value, f"{prefix}/{key}").items()}
    return {}


def test_preprocessing_a_subject_again_gives_the_same_image(runs):
    first, second, subject = runs["first"], runs["second"], runs["redone"]
    for kind in ("image", "mask"):
        _assert_same_volume(*(find_preprocessed(r, subject, kind) for r in (first, second)))
    a, b = (_without_times(r / f"preprocessed/{subject}/{subject}_desc-qc_T1w.tsv") for r in (first, second))
    assert "registration_ncc" in a.columns
    pd.testing.assert_frame_equal(a, b)


def test_same_seed_gives_identical_models_and_tokens(runs):
    first, second = runs["first"], runs["second"]
    for model in ("autoencoder/model.pt", f"prior/{SUBPOP}/model.pt"):
        a, b = (_tensors(torch.load(r / "models" / model, weights_only=True)) for r in (first, second))
        assert a.keys() == b.keys() and len(a) > 10
        for key in a:
            assert torch.equal(a[key], b[key]), f"{model}: {key}"
    a, b = (_without_times(r / "models/autoencoder/loss.tsv") for r in (first, second))
    assert "val_total" in a.columns
    pd.testing.assert_frame_equal(a, b)  # as text: the same to the last digit written
    _assert_same_bytes(*(r / f"models/prior/{SUBPOP}/loss.tsv" for r in (first, second)))
    _assert_same_bytes(*(r / f"models/prior/{SUBPOP}/heldout.tsv" for r in (first, second)))

    names = _files(first / "latents/tokens")
    assert names == _files(second / "latents/tokens") and len(names) >= 10
    for name in names:
        a, b = (np.load(r / "latents/tokens" / name) for r in (first, second))
        assert a.dtype == b.dtype and len(np.unique(a)) > 1
        np.testing.assert_array_equal(a, b, err_msg=name)
        _assert_same_bytes(first / "latents/tokens" / name, second / "latents/tokens" / name)
    # not one grid for everybody, so equal files are not equal by construction (the demo's small autoencoder
    # gives some subjects the same 288 codes: 6 distinct grids for 12 subjects)
    assert len({np.load(first / "latents/tokens" / n).tobytes() for n in names}) > 1


def test_same_seed_gives_identical_samples_and_tables(runs):
    first, second = runs["first"], runs["second"]
    samples = _files(first / "samples" / SUBPOP, "sample-*.nii.gz")
    assert samples and samples == _files(second / "samples" / SUBPOP, "sample-*.nii.gz")
    for name in samples:
        _assert_same_volume(first / "samples" / SUBPOP / name, second / "samples" / SUBPOP / name)
    _assert_same_bytes(*(r / f"samples/{SUBPOP}/scores.tsv" for r in (first, second)))
    _assert_same_bytes(*(r / f"volumes/synthetic/{SUBPOP}.tsv" for r in (first, second)))
    labels = _files(first / "segmentation/synthetic" / SUBPOP, "batch-*/*.nii.gz")
    assert labels and labels == _files(second / "segmentation/synthetic" / SUBPOP, "batch-*/*.nii.gz")
    for name in labels:
        _assert_same_volume(*(r / "segmentation/synthetic" / SUBPOP / name for r in (first, second)))


def test_another_seed_gives_another_prior_and_other_samples(runs):
    second, other = runs["second"], runs["other"]
    a, b = (
        _tensors(torch.load(r / f"models/prior/{SUBPOP}/model.pt", weights_only=True))
        for r in (second, other)
    )
    assert any(not torch.equal(a[key], b[key]) for key in a)
    scores = [pd.read_csv(r / f"samples/{SUBPOP}/scores.tsv", sep="\t") for r in (second, other)]
    assert not np.array_equal(scores[0]["score"], scores[1]["score"])
    for name in _files(second / "samples" / SUBPOP, "sample-*.nii.gz"):
        x, y = (np.asanyarray(nib.load(r / "samples" / SUBPOP / name).dataobj) for r in (second, other))
        assert not np.array_equal(x, y), name

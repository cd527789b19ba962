"""Memorisation check: nearest training image of each sample, flagged against the test-to-train distances."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import phantom
from scipy import stats

from morphgen.metrics.memorisation import (
    memorisation,
    memorisation_summary,
    memorisation_table,
    memorisation_threshold,
    nearest_distances,
)

SHAPE = (16, 20, 16)


def _phantoms(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([phantom(rng, SHAPE) for _ in range(n)])


@pytest.fixture(scope="module")
def cohort():
    train = _phantoms(1, 8)
    test = _phantoms(2, 20)
    noise = np.random.default_rng(3).normal(0, 1e-3, SHAPE).astype(np.float32)
    novel = _phantoms(4, 4)
    # two copies (one exact, one with tiny noise) of training images 5 and 2, among novel phantoms
    samples = np.stack([novel[0], train[5], novel[1], train[2] + noise, novel[2], novel[3]])
    return {
        "train": train,
        "train_ids": [f"sub-{k:03d}" for k in range(len(train))],
        "test": test,
        "samples": samples,
        "sample_ids": [f"sample-{k}" for k in range(len(samples))],
        "copies": {"sample-1": "sub-005", "sample-3": "sub-002"},
    }


def _brute_force(queries, references, distance="mse"):
    """Every query against every reference, one pair at a time."""
    dists = np.empty((len(queries), len(references)))
    for i, q in enumerate(queries.astype(np.float64)):
        for j, r in enumerate(references.astype(np.float64)):
            if distance == "mse":
                dists[i, j] = np.mean((q - r) ** 2)
            else:
                dists[i, j] = 1.0 - np.corrcoef(q.ravel(), r.ravel())[0, 1]
    return dists.min(axis=1), dists.argmin(axis=1)


@pytest.mark.parametrize("distance", ["mse", "correlation"])
def test_nearest_distances_match_brute_force(cohort, distance):
    got, idx = nearest_distances(cohort["samples"], cohort["train"], chunk=3, distance=distance)
    want, want_idx = _brute_force(cohort["samples"], cohort["train"], distance)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(idx, want_idx)


def test_chunked_equals_unchunked(cohort):
    full, full_idx = nearest_distances(cohort["test"], cohort["train"], chunk=len(cohort["train"]))
    for chunk in (1, 3, 5, 100):
        got, idx = nearest_distances(cohort["test"], cohort["train"], chunk=chunk)
        np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(idx, full_idx)


def test_paths_stream_like_arrays(cohort, tmp_path):
    paths = []
    for k, volume in enumerate(cohort["train"]):
        path = tmp_path / f"train_{k}.nii.gz"
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        paths.append(path)
    from_arrays = nearest_distances(cohort["samples"], cohort["train"], chunk=3)
    from_paths = nearest_distances(cohort["samples"], paths, chunk=3)
    np.testing.assert_allclose(from_paths[0], from_arrays[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(from_paths[1], from_arrays[1])


def test_copies_are_flagged_with_their_training_ids(cohort):
    table, summary = memorisation(
        cohort["samples"],
        cohort["sample_ids"],
        cohort["train"],
        cohort["train_ids"],
        cohort["test"],
        chunk=3,
    )
    flagged = table[table["flagged"]]
    assert dict(zip(flagged["sample_id"], flagged["nearest_train_id"], strict=True)) == cohort["copies"]
    assert summary["n_flagged"] == 2
    assert summary["n_samples"] == len(cohort["samples"])
    # the novel phantoms are not flagged, and copies sit below every real test image
    novel = table[~table["sample_id"].isin(list(cohort["copies"]))]
    assert not novel["flagged"].any()
    assert (table.loc[table["flagged"], "test_percentile"] == 0).all()


def test_threshold_is_numpy_percentile_of_test_distances(cohort):
    table, summary = memorisation(
        cohort["samples"], cohort["sample_ids"], cohort["train"], cohort["train_ids"], cohort["test"], chunk=4
    )
    test_dists, _ = _brute_force(cohort["test"], cohort["train"])
    want = np.percentile(test_dists, 1.0)
    assert table["threshold"].to_numpy() == pytest.approx(np.full(len(table), want), rel=1e-9)
    assert summary["threshold"] == pytest.approx(want, rel=1e-9)
    # with 20 test subjects, the linear 1st percentile lies between the two smallest distances
    lowest = np.sort(test_dists)[:2]
    assert lowest[0] <= want <= lowest[1]
    for d, pct in zip(table["distance"], table["test_percentile"], strict=True):
        assert pct == pytest.approx(stats.percentileofscore(test_dists, d, kind="weak"))


def test_table_flags_strictly_below_threshold():
    test = np.array([0.5, 0.2, 0.9, 0.4])
    threshold = np.percentile(test, 10.0)
    table = memorisation_table(
        ["a", "b", "c"], [threshold, threshold - 1e-9, 0.3], ["t1", "t2", "t3"], test, percentile=10.0
    )
    assert table["flagged"].tolist() == [False, True, False]
    assert memorisation_threshold(test, 10.0) == pytest.approx(threshold)
    assert memorisation_summary(table, 10.0)["n_flagged"] == 1
    assert table["sample_id"].tolist() == ["a", "b", "c"]


def test_bad_inputs_raise(cohort):
    with pytest.raises(ValueError, match="distance"):
        nearest_distances(cohort["samples"], cohort["train"], distance="l1")
    with pytest.raises(ValueError, match="shape"):
        nearest_distances(cohort["samples"], cohort["train"][:, :8])
    with pytest.raises(ValueError, match="differ"):
        memorisation_table(["a"], [0.1, 0.2], ["t"], [0.3])
    with pytest.raises(ValueError, match="percentile"):
        memorisation_threshold([0.1, 0.2], 101.0)


def test_pipeline_stage_flags_the_copies_per_sub_population(cohort, tmp_path):
    """The rule's stage: images by file, split from the subjects table, one summary row per sub-population."""
    from morphgen import stages
    from morphgen.tsv import read_tsv, write_tsv

    def save(volume, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        return str(path)

    real, rows = [], []
    for part, stack in (("train", cohort["train"]), ("test", cohort["test"])):
        for k, volume in enumerate(stack):
            sid = f"sub-{k:03d}" if part == "train" else f"sub-t{k:02d}"
            real.append(save(volume, tmp_path / "pre" / f"{sid}_space-MNI152_T1w.nii.gz"))
            rows.append({"participant_id": sid, "split": part})
    subjects = write_tsv(pd.DataFrame(rows), tmp_path / "subjects.tsv")
    samples = [
        save(volume, tmp_path / "samples" / ("age-old" if k % 2 else "age-young") / f"{sid}.nii.gz")
        for k, (sid, volume) in enumerate(zip(cohort["sample_ids"], cohort["samples"], strict=True))
    ]
    stages.memorisation(
        subjects, real, samples, ["age-young", "age-old"], {}, tmp_path / "mem.tsv", tmp_path / "summary.tsv"
    )
    table = read_tsv(tmp_path / "mem.tsv").set_index("sample_id")
    flagged = table[table["flagged"]]
    assert dict(flagged["nearest_train_id"]) == cohort["copies"]  # ids read back as text
    assert set(table["subpopulation"]) == {"age-young", "age-old"}
    summary = read_tsv(tmp_path / "summary.tsv").set_index("subpopulation")
    assert summary.loc["age-old", "n_flagged"] == 2 and summary.loc["age-young", "n_flagged"] == 0
    assert (summary["n_samples"] == 3).all()

"""The family comparison: each run's row from its own tables, then the runs side by side."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from morphgen.report.comparison import comparison_sources, family_comparison, missing_runs, run_summary
from morphgen.tsv import write_tsv


def fake_run(root, recon_r: float, synthetic_d: float, train_seconds: list[float]):
    tables = root / "tables"
    write_tsv(
        pd.DataFrame(
            {
                "tissue": ["ventricles", "brain"],
                "pearson_r": [recon_r, 0.95],
                "slope": [0.8, 1.0],
                "verdict": ["carries", "carries"],
            }
        ),
        tables / "reconstruction_volumes.tsv",
    )
    write_tsv(
        pd.DataFrame(
            {
                "contrast": ["age-old vs age-young", "age-old vs age-young"],
                "tissue": ["ventricles", "brain"],
                "real_d": [3.0, -1.0],
                "synthetic_d": [synthetic_d, -0.5],
            }
        ),
        tables / "subgroup_effects.tsv",
    )
    write_tsv(
        pd.DataFrame(
            {
                "subpopulation": ["age-old", "age-old", "age-young", "age-young"],
                "source": ["real", "synthetic", "real", "synthetic"],
                "n": [4, 4, 4, 4],
                "msssim_sd": [0.1, 0.1, 0.1, 0.1],
                "msssim_mean": [0.9, 0.8, 0.9, 0.6],
            }
        ),
        tables / "table1_fidelity.tsv",
    )
    write_tsv(
        pd.DataFrame({"subpopulation": ["age-old"], "n_flagged": [1]}), tables / "memorisation_summary.tsv"
    )
    for i, seconds in enumerate(train_seconds):
        write_tsv(pd.DataFrame({"s": [seconds]}), root / "benchmarks/train_prior" / f"{i}.tsv")
    return root


def test_a_runs_row_comes_from_its_own_tables(tmp_path):
    run = fake_run(tmp_path / "a", 0.93, 1.2, [10.0, 5.5])
    row = run_summary(run, "m3ae")
    assert row["family"] == "m3ae" and row["recon_ventricles_r"] == 0.93
    assert row["recon_ventricles_verdict"] == "carries" and "recon_gm_r" not in row
    assert row["age-old vs age-young_real_d"] == 3.0 and row["age-old vs age-young_synthetic_d"] == 1.2
    # the synthetic rows only, averaged; not the sds or counts
    assert row["synthetic_msssim_mean"] == pytest.approx(0.7)
    assert "synthetic_n" not in row and "synthetic_msssim_sd" not in row
    assert row["memorised_samples"] == 1
    assert row["train_prior_s"] == 15.5 and math.isnan(row["generate_s"])  # every job of a rule, summed
    assert "recon_dice_gm" not in row  # a run without the Dice table


def test_a_runs_row_has_the_mean_tissue_dice(tmp_path):
    run = fake_run(tmp_path / "a", 0.93, 1.2, [1.0])
    dice = pd.DataFrame({"subject": ["sub-01", "sub-02", "mean", "min"], "dice_gm": [0.8, 0.6, 0.7, 0.6]})
    write_tsv(dice, run / "tables/reconstruction_dice.tsv")
    assert run_summary(run, "m3ae")["recon_dice_gm"] == pytest.approx(0.7)


def test_a_runs_row_has_the_reconstructions_fidelity_and_vbm(tmp_path):
    run = fake_run(tmp_path / "a", 0.93, 1.2, [1.0])
    assert "recon_msssim_mean" not in run_summary(run, "m3ae")
    fidelity = pd.DataFrame({"msssim_mean": [0.97], "log_bmmd2": [-7.5], "mae_mean": [0.02]})
    write_tsv(fidelity, run / "tables/reconstruction_fidelity.tsv")
    vbm = pd.DataFrame({"significant_voxels": [40], "bonferroni_voxels": [3], "max_abs_t": [9.0]})
    write_tsv(vbm, run / "tables/reconstruction_vbm.tsv")
    row = run_summary(run, "m3ae")
    assert row["recon_msssim_mean"] == 0.97 and row["recon_log_bmmd2"] == -7.5 and "recon_mae_mean" not in row
    assert row["recon_vbm_significant_voxels"] == 40 and row["recon_vbm_bonferroni_voxels"] == 3


def test_runs_side_by_side_and_the_missing_ones_named(tmp_path):
    rows = []
    for name, r in (("a", 0.5), ("b", 0.9)):
        run = fake_run(tmp_path / name, r, 0.1, [1.0])
        rows.append(run / "tables/run_summary.tsv")
        write_tsv(pd.DataFrame([run_summary(run, f"family-{name}")]), rows[-1])
    sources = comparison_sources(rows[0], [str(tmp_path / "b"), str(tmp_path / "never-run")])
    assert missing_runs(sources) == [str(tmp_path / "never-run")]
    table = family_comparison(sources)
    assert list(table["family"]) == ["family-a", "family-b"]
    assert list(table["recon_ventricles_r"]) == [0.5, 0.9]
    assert list(table["results"]) == [str((tmp_path / n).resolve()) for n in ("a", "b")]
    assert len(family_comparison([*sources, tmp_path / "b/../b/tables/run_summary.tsv"])) == 2  # once each


def test_runs_of_two_working_copies_are_two_rows(tmp_path):
    """Each copy's summary names its results folder as configured (``results``): still two runs."""
    rows = []
    for name, r in (("copy-1", 0.5), ("copy-2", 0.9)):
        run = fake_run(tmp_path / name / "results", r, 0.1, [1.0])
        summary = run_summary(run, f"family-{name}") | {"results": "results"}
        rows.append(run / "tables/run_summary.tsv")
        write_tsv(pd.DataFrame([summary]), rows[-1])
    table = family_comparison(rows)
    assert list(table["family"]) == ["family-copy-1", "family-copy-2"]

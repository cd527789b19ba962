"""Tables (planted effects, known truth) and figures (PNG written, orientation of the sample grid)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch

from morphgen.nifti import save_volume
from morphgen.report import (
    loss_curves,
    read_members,
    read_tsv,
    reconstruction_check,
    reconstruction_scatter,
    sample_grid,
    subgroup_effects,
    table1_fidelity,
    table2_volumes,
    truth_check,
    truth_scatter,
    volume_distributions,
    with_regions,
)
from morphgen.report.figures import orthogonal_planes
from morphgen.report.tables import TISSUES, default_contrasts, write_tsv
from morphgen.space import Grid

torch.set_num_threads(1)


def _volumes(ids, rng, gm=600.0, wm=450.0, csf=280.0, sd=10.0, id_col="participant_id") -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            id_col: ids,
            "gm_ml": rng.normal(gm, sd, n),
            "wm_ml": rng.normal(wm, sd, n),
            "csf_ml": rng.normal(csf, sd, n),
            "ventricles_ml": np.nan,  # e.g. a backend that does not segment ventricles
            "brain_ml": rng.normal(gm + wm, sd, n),
        }
    )


@pytest.fixture
def cohort():
    """Real volumes of two sub-populations; 'old' has 40 ml less GM. Synthetic: old preserved exactly
    (a shuffled copy of the real values, a null difference), young with 50 ml more GM (planted)."""
    rng = np.random.default_rng(0)
    young = [f"sub-{k:02d}" for k in range(12)]
    old = [f"sub-{k:02d}" for k in range(12, 24)]
    real = pd.concat([_volumes(young, rng), _volumes(old, rng, gm=560.0)], ignore_index=True)
    real_old = real[real.participant_id.isin(old)]
    synth_old = real_old.sample(frac=1.0, random_state=1).assign(sample_id=[f"s{k}" for k in range(12)])
    synth_old = synth_old.drop(columns="participant_id")
    synth_young = real[real.participant_id.isin(young)].drop(columns="participant_id").copy()
    synth_young["sample_id"] = [f"s{k}" for k in range(12)]
    synth_young["gm_ml"] += 50.0
    members = {"age-young": young, "age-old": old}
    return real, {"age-young": synth_young, "age-old": synth_old}, members


def test_table2_flags_planted_difference_only(cohort, tmp_path):
    real, synth, members = cohort
    out = tmp_path / "table2.tsv"
    df = table2_volumes(real, synth, members, alpha=0.05, out_tsv=out)
    # ventricles are all NaN: skipped; 2 sub-populations x 3 tissues
    assert len(df) == 6 and "ventricles" not in set(df.tissue)
    assert df.bonferroni_threshold.iloc[0] == pytest.approx(0.05 / 6)
    flagged = df[df.significant]
    assert list(zip(flagged.subpopulation, flagged.tissue, strict=True)) == [("age-young", "gm")]
    assert flagged.t.iloc[0] > 0 and flagged.cohen_d.iloc[0] > 2
    null = df[(df.subpopulation == "age-old") & (df.tissue == "gm")].iloc[0]
    assert null.p == pytest.approx(1.0) and null.cohen_d == pytest.approx(0.0, abs=1e-12)
    young_gm = real[real.participant_id.isin(members["age-young"])].gm_ml
    row = df[(df.subpopulation == "age-young") & (df.tissue == "gm")].iloc[0]
    assert row.real == f"{young_gm.mean():.1f} ± {young_gm.std(ddof=1):.1f}"
    back = read_tsv(out)
    assert back.shape == df.shape and back.significant.sum() == 1


def test_subgroup_effects_show_whether_the_effect_survives(cohort):
    real, synth, members = cohort
    assert default_contrasts(members) == [("age-old", "age-young")]
    df = subgroup_effects(real, synth, members).set_index("tissue")
    assert df.loc["gm", "contrast"] == "age-old vs age-young"
    assert df.loc["gm", "real_d"] < -2  # 40 ml less GM with sd 10
    assert df.loc["gm", "synthetic_d"] < df.loc["gm", "real_d"]  # synthetic young got 50 ml more
    assert df.loc["gm", "same_sign"]
    reversed_synth = {"age-young": synth["age-old"], "age-old": synth["age-young"]}
    flipped = subgroup_effects(real, reversed_synth, members).set_index("tissue")
    assert not flipped.loc["gm", "same_sign"]


def _truth(n: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    truth = pd.DataFrame(
        {"participant_id": [f"sub-{k:02d}" for k in range(n)], "age": rng.uniform(45, 85, n)}
    )
    for tissue, mean in (("gm", 600), ("wm", 450), ("csf", 280), ("ventricles", 25), ("brain", 1050)):
        truth[f"true_{tissue}_mni_ml"] = rng.normal(mean, mean / 10, n)
    return truth


def _measured(truth: pd.DataFrame, factor) -> pd.DataFrame:
    out = pd.DataFrame({"participant_id": truth.participant_id})
    for tissue in ("gm", "wm", "csf", "ventricles", "brain"):
        out[f"{tissue}_ml"] = truth[f"true_{tissue}_mni_ml"] * factor
    return out.iloc[::-1]  # row order must not matter


def test_truth_check_perfect_biased_and_mixed():
    truth = _truth()
    perfect = truth_check(truth, _measured(truth, 1.0))
    assert list(perfect.tissue) == ["gm", "wm", "csf", "ventricles", "brain"]
    assert np.allclose(perfect.pearson_r, 1.0) and np.allclose(perfect.mape_percent, 0.0)
    biased = truth_check(truth, _measured(truth, 1.1))
    assert np.allclose(biased.mape_percent, 10.0) and np.allclose(biased.bias_percent, 10.0)
    assert np.allclose(biased.pearson_r, 1.0) and (biased.n == 10).all()
    mixed = truth_check(truth, _measured(truth, np.where(np.arange(10) % 2, 1.1, 0.9)))
    assert np.allclose(mixed.mape_percent, 10.0) and np.allclose(mixed.bias_percent, 0.0, atol=1e-9)
    assert (mixed.pearson_r < 1).all()
    with pytest.raises(ValueError, match="no participant ids shared"):
        truth_check(truth, _measured(truth, 1.0).assign(participant_id="other"))


def test_truth_check_adds_the_hippocampi_from_the_regional_table():
    truth = _truth().assign(true_hippocampus_mni_ml=np.linspace(6.0, 9.0, 10))
    regions = pd.DataFrame(
        {"participant_id": truth.participant_id, "hippocampus_ml": truth.true_hippocampus_mni_ml * 1.05}
    ).iloc[3:]  # three subjects have no regional volumes
    measured = with_regions(_measured(truth, 1.0), regions.assign(amygdala_ml=1.0))
    assert "amygdala_ml" not in measured.columns
    table = truth_check(truth, measured).set_index("tissue")
    assert table.loc["hippocampus", "n"] == 7 and table.loc["gm", "n"] == 10
    assert table.loc["hippocampus", "bias_percent"] == pytest.approx(5.0)


def test_reconstruction_check_matches_subjects_not_rows(tmp_path):
    truth = _truth()
    real = _measured(truth, 1.0).iloc[::-1]
    real["brain_ml"] = np.nan  # a tissue the tables do not compare
    # reconstructions that carry no subject's anatomy: every one at the mean of the real volumes
    mean_brain = _measured(truth, 1.0).assign(**{f"{t}_ml": real[f"{t}_ml"].mean() for t in TISSUES})
    flat = reconstruction_check(real, mean_brain)
    assert list(flat.tissue) == list(TISSUES) and np.isnan(flat.pearson_r).all()
    assert np.allclose(flat.bias_percent, 0.0, atol=2.0) and (flat.mape_percent > 3).all()
    shrunk = reconstruction_check(real, _measured(truth, 0.8).iloc[:6])  # six reconstructed subjects
    assert (shrunk.n == 6).all() and np.allclose(shrunk.pearson_r, 1.0)
    assert np.allclose(shrunk.bias_percent, -20.0) and np.allclose(
        shrunk.real_mean_ml, shrunk.reconstructed_mean_ml / 0.8
    )
    with pytest.raises(ValueError, match="no ids shared"):
        reconstruction_check(real, _measured(truth, 1.0).assign(participant_id="other"))
    png = reconstruction_scatter(real, _measured(truth, 0.8), tmp_path / "recon.png")
    assert len(_png_shape(png)) == 3


def test_table1_fidelity_rows_and_tsv(tmp_path):
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, 48)] * 3, indexing="ij"))
    blob = np.clip(1.2 - 1.5 * np.sqrt((g**2).sum(0)), 0, 1)
    rng = np.random.default_rng(0)
    real = np.clip(blob + rng.normal(0, 0.05, (4, 48, 48, 48)), 0, 1)
    synth_good = np.stack([blob] * 3)  # identical samples: no diversity (MS-SSIM 1)
    synth_bad = np.clip(blob * 0.5, 0, 1)[None].repeat(3, axis=0)  # shifted intensities
    out = tmp_path / "table1.tsv"
    df = table1_fidelity(
        {"a": real, "b": real},
        {"a": synth_good, "b": synth_bad},
        batch_size=4, n_pairs=3, kernel_size=3, seed=0, n_batches=5, out_tsv=out, progress=False,
    )  # fmt: skip
    assert list(df.source) == ["real", "synthetic", "real", "synthetic"]
    assert list(df.n) == [4, 3, 4, 3] and (df.mmd_batch_size == 2).all()  # min(4, 4 // 2, 3)
    assert list(df.msssim_pairs) == [3, 3, 3, 3]
    rows = df.set_index(["subpopulation", "source"])
    assert rows.loc[("a", "synthetic"), "msssim_mean"] == pytest.approx(1.0, abs=1e-5)
    assert rows.loc[("a", "real"), "msssim_mean"] < 0.999
    assert rows.loc[("b", "synthetic"), "bmmd2_mean"] > 10 * rows.loc[("a", "synthetic"), "bmmd2_mean"]
    assert rows.loc[("a", "real"), "bmmd2_mean"] > 0
    # 4-G-R-SSIM sees the same pairs: identical samples score 1, noisy real images less
    assert rows.loc[("a", "synthetic"), "gr4ssim_mean"] == pytest.approx(1.0, abs=1e-6)
    assert rows.loc[("a", "real"), "gr4ssim_mean"] < rows.loc[("a", "real"), "msssim_mean"] + 1
    assert rows.loc[("a", "real"), "gr4ssim_mean"] < 0.999
    # no feature network configured: every FID column says so instead of holding a number
    fids = df[["fid_axial", "fid_coronal", "fid_sagittal", "fid_slices", "fid_3d"]]
    assert (fids == "no weights configured").all(axis=None)
    # SNR inside the brain, of each row's own images: noise lowers it
    from morphgen.metrics.fidelity import snr

    assert rows.loc[("a", "real"), "snr_mean"] < rows.loc[("a", "synthetic"), "snr_mean"]
    assert rows.loc[("b", "synthetic"), "snr_mean"] == pytest.approx(snr(synth_bad)[0])
    assert rows.loc[("b", "real"), "snr_sd"] == pytest.approx(snr(real)[1])
    assert read_tsv(out).shape == df.shape


def test_tsv_round_trip_and_members(tmp_path):
    path = write_tsv(
        pd.DataFrame(
            {"participant_id": ["001", "002", "003"], "split": ["train", "test", "train"], "x": [1, None, 3]}
        ),
        tmp_path / "sub" / "members.tsv",
    )
    assert "n/a" in path.read_text()
    assert read_members(path) == ["001", "002", "003"]  # ids stay strings (no int parsing)
    assert read_members(path, split="train") == ["001", "003"]
    assert np.isnan(read_tsv(path).x.iloc[1])


# ---------------------------------------------------------------------------------------------- figures


def _png_shape(path) -> tuple[int, ...]:
    assert path.exists() and path.stat().st_size > 0
    return mpimg.imread(path).shape


def test_orthogonal_planes_put_right_anterior_superior_where_expected():
    full = np.zeros((10, 12, 8))  # RAS+: high i = patient's right, high j = anterior, high k = superior
    full[5:, 6:, 4:] = 1.0  # the right-anterior-superior octant, so every centre slice cuts it
    planes = orthogonal_planes(full, "radiological")
    axial, labels = planes["axial"]
    assert labels == ("R", "L", "A", "P")
    rows, cols = np.nonzero(axial)
    assert rows.max() < axial.shape[0] / 2 and cols.max() < axial.shape[1] / 2  # top-left: anterior, right
    coronal, _ = planes["coronal"]
    rows, cols = np.nonzero(coronal)
    assert (
        rows.max() < coronal.shape[0] / 2 and cols.max() < coronal.shape[1] / 2
    )  # top-left: superior, right
    sagittal, labels = planes["sagittal"]
    assert labels == ("A", "P", "S", "I")
    rows, cols = np.nonzero(sagittal)
    assert (
        rows.max() < sagittal.shape[0] / 2 and cols.max() < sagittal.shape[1] / 2
    )  # top-left: superior, ant.
    axial_neuro, labels = orthogonal_planes(full, "neurological")["axial"]
    assert labels[0] == "L" and np.array_equal(axial_neuro, axial[:, ::-1])


def test_sample_grid_from_arrays_and_paths(tmp_path):
    grid = Grid(voxel_size=8.0, shape=(24, 28, 24))
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in grid.shape], indexing="ij"))
    vols = [np.clip(1.1 - np.sqrt((g**2).sum(0)) * (1 + 0.1 * k), 0, 1) for k in range(3)]
    paths = [save_volume(tmp_path / f"s{k}.nii.gz", v, grid.affine) for k, v in enumerate(vols)]
    png = sample_grid(paths, tmp_path / "grid_paths.png", "Synthetic samples", ids=["a", "b", "c"],
                      scores=[0.9, 0.8, 0.7])  # fmt: skip
    h, w, _ = _png_shape(png)
    assert w > h  # three samples side by side, three planes each
    png = sample_grid(np.stack(vols * 6), tmp_path / "grid_arrays.png", "Real images", n_max=16)
    assert _png_shape(png)[0] > h  # 16 of 18 samples: four rows


def test_volume_distributions_loss_curves_and_truth_scatter(cohort, tmp_path):
    real, synth, members = cohort
    png = volume_distributions(real, synth, members, tmp_path / "volumes.png")
    h, w, channels = _png_shape(png)
    # three tissue panels side by side (ventricles all NaN: left out): the report shows a figure at the
    # width of its pane, and a tall one loses its title and legend at the top
    assert w > 2 * h and channels in (3, 4)

    losses = pd.DataFrame(
        {
            "epoch": np.repeat(np.arange(5), 4),
            "step": np.arange(20),
            "l1": np.geomspace(1, 0.01, 20),
            "adversarial": np.r_[[np.nan] * 8, np.linspace(-0.5, 0.5, 12)],  # starts late, can be negative
        }
    )
    losses.to_csv(tmp_path / "losses.tsv", sep="\t", index=False)
    png = loss_curves(tmp_path / "losses.tsv", tmp_path / "losses.png", "VQ-VAE training")
    h, w, _ = _png_shape(png)
    assert w > h  # two panels side by side: l1 (log) and adversarial (linear)

    truth = _truth()
    png = truth_scatter(truth, _measured(truth, 1.05), tmp_path / "truth.png")
    assert len(_png_shape(png)) == 3


def test_loss_panels_pair_related_terms_and_keep_unknown_columns():
    from morphgen.report.figures import _loss_panels

    columns = [
        "lr",
        "l1",
        "total",
        "generator_adversarial",
        "discriminator",
        "val_l1",
        "val_total",
        "novel_term",
    ]
    panels = {title: [c for c, _ in lines] for title, _, lines in _loss_panels(columns)}
    assert panels["L1 reconstruction"] == ["l1", "val_l1"]  # a term with its validation curve
    assert panels["Total loss"] == ["total", "val_total"]
    assert panels["Adversarial (least squares)"] == ["generator_adversarial", "discriminator"]
    assert panels["novel term"] == ["novel_term"]  # nothing is dropped
    assert sum(len(v) for v in panels.values()) == len(columns)
    prior = {t: [c for c, _ in lines] for t, _, lines in _loss_panels(["train_loss", "val_nll_per_token"])}
    assert prior == {"Prior: cross-entropy": ["train_loss", "val_nll_per_token"]}


def test_the_truth_table_says_which_tissue_disagrees():
    truth = _truth()
    measured = _measured(truth, 1.0)
    rng = np.random.default_rng(0)
    measured["ventricles_ml"] = rng.permutation(measured["ventricles_ml"].to_numpy())  # unrelated to truth
    table = truth_check(truth, measured).set_index("tissue")
    assert table.loc["gm", "verdict"] == "agrees with the truth"
    assert table.loc["ventricles", "verdict"].startswith("disagrees: r ")


def test_conditioning_check_matches_samples_by_id_and_separates_extrapolation(tmp_path):
    from morphgen.report.figures import conditioning_scatter
    from morphgen.report.tables import conditioning_check

    rng = np.random.default_rng(4)
    asked = np.linspace(20, 60, 12)
    requested = pd.DataFrame(
        {
            "participant_id": [f"sample-{i:04d}" for i in range(12)],
            "ventricles": asked,
            "brain": 1500.0,  # one value for all: no correlation to report
            "outside_range": [""] * 10 + ["ventricles", "ventricles"],
        }
    )
    measured = pd.DataFrame(
        {
            "participant_id": requested["participant_id"][::-1],  # another order: matched on id
            "ventricles_ml": (1.1 * asked + rng.normal(0, 0.5, 12))[::-1],
            "brain_ml": rng.normal(1500, 10, 12),
        }
    )
    columns = {"ventricles": "ventricles_ml", "brain": "brain_ml", "age": "age"}  # age is not measured
    table = conditioning_check(requested, measured, columns, out_tsv=tmp_path / "c.tsv")
    assert set(table["covariate"]) == {"ventricles", "brain"}
    vent = table[table.covariate == "ventricles"].set_index("samples")
    assert vent.loc["all", "n"] == 12 and vent.loc["in range", "n"] == 10
    assert vent.loc["all", "pearson_r"] > 0.99 and vent.loc["all", "bias_percent"] == pytest.approx(10, abs=2)
    assert np.isnan(table.loc[table.covariate == "brain", "pearson_r"]).all()
    # shuffled measurements: no correlation left
    shuffled = measured.assign(participant_id=rng.permutation(measured["participant_id"]))
    r = conditioning_check(requested, shuffled, columns).set_index(["covariate", "samples"])
    assert abs(r.loc[("ventricles", "all"), "pearson_r"]) < 0.9
    png = conditioning_scatter({"requested": (requested, measured)}, columns, tmp_path / "c.png")
    assert png.stat().st_size > 5000
    with pytest.raises(ValueError, match="no covariate"):
        conditioning_check(requested, measured, {"age": "age"})


def test_conditioning_check_reads_each_grid_row_alone(tmp_path):
    """Along the grid row that varies the ventricles only they change; the other rows do not dilute r."""
    from morphgen.report.figures import conditioning_scatter
    from morphgen.report.tables import conditioning_check

    rng = np.random.default_rng(5)
    ids = [f"ventricles-{i:02d}" for i in range(5)] + [f"age-{i:02d}" for i in range(5)]
    asked = np.r_[np.linspace(25, 45, 5), np.full(5, 35.0)]
    requested = pd.DataFrame(
        {"sample_id": ids, "vary": ["ventricles"] * 5 + ["age"] * 5, "ventricles": asked, "outside_range": ""}
    )
    # the age row's samples differ in ventricle volume for a reason other than the asked ventricles
    got = np.r_[0.8 * asked[:5] + 10, rng.normal(35, 8, 5)]
    measured = pd.DataFrame({"participant_id": ids, "ventricles_ml": got})
    table = conditioning_check(requested, measured, {"ventricles": "ventricles_ml"}).set_index("samples")
    assert table.loc["grid row", "n"] == 5
    assert table.loc["grid row", "pearson_r"] == pytest.approx(1.0)
    assert table.loc["all", "n"] == 10 and table.loc["all", "pearson_r"] < 0.9
    # a table of requests (no grid) has no grid row
    table = conditioning_check(requested.drop(columns="vary"), measured, {"ventricles": "ventricles_ml"})
    assert "grid row" not in set(table["samples"])
    # the figure gives the grid row its own panel, under the pooled one
    columns = {"ventricles": "ventricles_ml"}
    grid = conditioning_scatter({"requested": (requested, measured)}, columns, tmp_path / "grid.png")
    pooled = conditioning_scatter(
        {"requested": (requested.drop(columns="vary"), measured)}, columns, tmp_path / "pooled.png"
    )
    assert _png_shape(grid)[0] > 1.5 * _png_shape(pooled)[0]


def test_covariate_effects_compare_the_samples_slope_with_the_real_one(tmp_path):
    """Real ventricles grow 0.4 ml a year; the generated samples 0.2 (ratio 0.5); along the grid's age row
    0.4, and its other row (another covariate varied) does not count; sex has no slope."""
    from morphgen.report.tables import covariate_effects

    rng = np.random.default_rng(2)
    age = rng.uniform(50, 85, 40)
    real = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(40)],
            "age": age,
            "sex": ["F", "M"] * 20,
            "ventricles_ml": 10 + 0.4 * age + rng.normal(0, 0.5, 40),
            "brain_ml": 1500 - 2.0 * age,
        }
    )
    asked = rng.uniform(50, 85, 16)
    generated = (
        pd.DataFrame({"sample_id": [f"sample-{i:04d}" for i in range(16)], "age": asked, "sex": "F"}),
        pd.DataFrame(
            {
                "participant_id": [f"sample-{i:04d}" for i in range(16)][::-1],  # matched by id
                "ventricles_ml": (20 + 0.2 * asked)[::-1],
                "brain_ml": 1400.0,
            }
        ),
    )
    grid_age = np.linspace(50, 85, 5)
    requested = pd.DataFrame(
        {
            "sample_id": [f"age-{i:02d}" for i in range(5)] + [f"brain-{i:02d}" for i in range(5)],
            "vary": ["age"] * 5 + ["brain"] * 5,
            "age": np.r_[grid_age, np.full(5, 70.0)],
            "sex": "F",
        }
    )
    grid = (
        requested,
        pd.DataFrame(
            {
                "participant_id": requested["sample_id"],
                "ventricles_ml": np.r_[0.4 * grid_age, rng.normal(40, 9, 5)],
                "brain_ml": 1400.0,
            }
        ),
    )
    table = covariate_effects(
        {"generated": generated, "requested": grid}, real, ["age", "sex"], out_tsv=tmp_path / "e.tsv"
    )
    assert set(table["covariate"]) == {"age"}  # no slope of a text covariate
    rows = table.set_index(["source", "volume"])
    assert rows.loc[("generated", "ventricles"), "slope_ratio"] == pytest.approx(0.5, abs=0.05)
    assert rows.loc[("generated", "ventricles"), "real_slope"] == pytest.approx(0.4, abs=0.03)
    assert rows.loc[("requested", "ventricles"), "n"] == 5  # the age row alone
    assert rows.loc[("requested", "ventricles"), "slope_ratio"] == pytest.approx(1.0, abs=0.1)
    assert np.isnan(rows.loc[("generated", "brain"), "pearson_r"])  # a constant volume: no r
    assert rows.loc[("generated", "brain"), "slope_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert read_tsv(tmp_path / "e.tsv").shape == table.shape


def test_table_pages_round_for_reading_and_name_units(tmp_path):
    from morphgen.report.pages import format_value, header, write_table_page

    assert header("ventricles_ml") == "ventricles (ml)" and header("real_d") == "real d"
    assert format_value("p_bonferroni", 0.000012345) == "1.2e-05" and format_value("p", 0.04321) == "0.043"
    assert format_value("real_d", -1.98765) == "-1.99" and format_value("pearson_r", 0.912345) == "0.91"
    assert format_value("gm_ml", 612.3456) == "612.3" and format_value("ms_ssim", 0.9481234567) == "0.948"
    assert format_value("n", np.int64(1234)) == "1,234" and format_value("x", float("nan")) == ""
    assert format_value("r", "0.019889002212219085") == "0.02" and format_value("why", "n/a") == "n/a"
    table = pd.DataFrame(
        {"tissue": ["gm", "<wm>"], "real_mean_ml": [612.3456789012, 450.0], "p": [1e-7, 0.5]}
    )
    table.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    page = write_table_page(tmp_path / "t.tsv", tmp_path / "t.html", "Table 2").read_text()
    assert '<th class="num">real mean (ml)</th>' in page and "612.3</td>" in page and "1.0e-07" in page
    assert "&lt;wm&gt;" in page and "612.3456" not in page  # escaped, rounded
    assert str(tmp_path / "t.tsv") in page  # where the full precision is


def test_region_effects_figure_reads_the_validity_of_each_contrast(tmp_path, monkeypatch):
    import morphgen.report.figures as figures

    rows = [
        {
            "effect": "cohen_d",
            "name": "age-old vs age-young",
            "region": f"r{i}",
            "real": i / 5,
            "synthetic": i / 4,
        }
        for i in range(6)
    ] + [{"effect": "age_r", "name": "age", "region": "r0", "real": 0.3, "synthetic": float("nan")}]
    agreement = pd.DataFrame(
        [
            {
                "comparison": "cohen_d",
                "name": "age-old vs age-young",
                "validity": "not a finding: samples collapsed",
            }
        ]
    )
    seen = {}
    real_scatter = figures.agreement_scatter

    def spy(pairs, out_png, title, axis_labels, per_row=3, **kwargs):
        seen.update(pairs=pairs, **kwargs)
        return real_scatter(pairs, out_png, title, axis_labels, per_row, **kwargs)

    monkeypatch.setattr(figures, "agreement_scatter", spy)
    figures.effects_scatter(pd.DataFrame(rows), tmp_path / "effects.png", agreement)
    assert list(seen["pairs"]) == ["old vs young, d"]  # the age panel has no synthetic value: left out
    assert seen["panel_axes"]["old vs young, d"] == (
        "real effect (Cohen's d)",
        "synthetic effect (Cohen's d)",
    )
    assert seen["notes"]["old vs young, d"].startswith("d > 0: region larger in old than in young")
    assert seen["verdicts"]["old vs young, d"].startswith("not a finding") and seen["good"] == "valid"
    assert seen["point_names"]["old vs young, d"] == [f"r{i}" for i in range(6)]
    assert (tmp_path / "effects.png").stat().st_size > 1000

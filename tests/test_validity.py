"""Validity gates: a synthetic effect is a finding only if the autoencoder carries anatomy, samples vary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from morphgen import stages
from morphgen.errors import ConfigError
from morphgen.report.tables import reconstruction_check
from morphgen.report.validity import DEFAULT_THRESHOLDS, assess, reconstruction_verdict, thresholds_of
from morphgen.tsv import read_tsv, write_tsv

TISSUES = ("gm", "wm", "csf", "ventricles")


def _volumes(ids, rng, spread=1.0, shift=0.0) -> pd.DataFrame:
    n = len(ids)
    table = pd.DataFrame({"participant_id": ids})
    for tissue, mean, sd in (("gm", 600, 30), ("wm", 450, 25), ("csf", 250, 20), ("ventricles", 30, 8)):
        table[f"{tissue}_ml"] = mean + shift * sd + spread * sd * rng.standard_normal(n)
    return table


def test_thresholds_default_and_errors_name_the_key():
    assert thresholds_of({})["reconstruction_slope"] == (0.7, 1.3)
    assert thresholds_of({"validity": {"diversity_ratio": 0.3}})["diversity_ratio"] == 0.3
    with pytest.raises(ConfigError, match="evaluation.validity: unknown"):
        thresholds_of({"validity": {"diversity": 0.3}})
    with pytest.raises(ConfigError, match="evaluation.validity.reconstruction_slope"):
        thresholds_of({"validity": {"reconstruction_slope": [1.3, 0.7]}})


def test_reconstruction_verdict_and_slope_from_real_and_reconstructed_volumes():
    rng = np.random.default_rng(0)
    real = _volumes([f"sub-{i}" for i in range(12)], rng)
    faithful = real.assign(**{f"{t}_ml": real[f"{t}_ml"] * 1.02 for t in TISSUES})
    # a decoder that draws the mean brain: every reconstruction has the same volumes
    mean_brain = real.assign(**{f"{t}_ml": real[f"{t}_ml"].mean() + 1e-3 * np.arange(12) for t in TISSUES})
    good = reconstruction_check(real, faithful).set_index("tissue")
    assert (good["verdict"] == "carries").all()
    assert np.allclose(good["slope"], 1.02)
    bad = reconstruction_check(real, mean_brain).set_index("tissue")
    assert bad["verdict"].str.startswith("does not carry").all()
    assert "slope 0.00 outside 0.7-1.3" in bad.loc["ventricles", "verdict"]
    biased = {"pearson_r": 0.99, "slope": 1.0, "bias_percent": -37.0}
    assert "bias -37% beyond" in reconstruction_verdict(biased, DEFAULT_THRESHOLDS)


def test_collapsed_samples_make_effects_not_a_finding(tmp_path):
    """Real old subjects have larger ventricles; samples that are copies of one image print a d all the same.
    The tables keep the d and say that it is not a finding; diverse samples are valid."""
    rng = np.random.default_rng(1)
    young_ids, old_ids = [f"sub-y{i}" for i in range(10)], [f"sub-o{i}" for i in range(10)]
    real = pd.concat([_volumes(young_ids, rng), _volumes(old_ids, rng, shift=2.0)], ignore_index=True)
    recon = reconstruction_check(real, real.assign(gm_ml=real["gm_ml"] * 1.01))
    write_tsv(real, tmp_path / "real.tsv")
    write_tsv(recon, tmp_path / "reconstruction.tsv")
    for name, ids in (("age-young", young_ids), ("age-old", old_ids)):
        write_tsv(pd.DataFrame({"participant_id": ids}), tmp_path / f"{name}.tsv")
    subpop_cfg = {"age": {"covariate": "age", "names": ["young", "old"]}}
    results = {}
    for case, spread in (("collapsed", 0.01), ("diverse", 1.0)):
        folder = tmp_path / case
        folder.mkdir()
        synth = []
        for name, shift in (("age-young", 0.0), ("age-old", 2.0)):
            samples = _volumes([f"s{i}" for i in range(10)], rng, spread=spread, shift=shift)
            write_tsv(samples.rename(columns={"participant_id": "sample_id"}), folder / f"{name}.tsv")
            synth.append(folder / f"{name}.tsv")
        stages.volume_tables(
            ["age-young", "age-old"],
            [tmp_path / "age-young.tsv", tmp_path / "age-old.tsv"],
            tmp_path / "real.tsv",
            synth,
            0.05,
            folder / "table2.tsv",
            folder / "effects.tsv",
            folder / "volumes.png",
            subpop_cfg,
            reconstruction_tsv=tmp_path / "reconstruction.tsv",
            evaluation={},
        )
        results[case] = (read_tsv(folder / "table2.tsv"), read_tsv(folder / "effects.tsv"))
    table2, effects = results["collapsed"]
    assert (table2["sd_ratio"] < 0.1).all()
    row = effects.set_index("tissue").loc["ventricles"]
    assert np.isfinite(float(row["synthetic_d"]))  # the number is still there ...
    assert str(row["validity"]).startswith("not a finding") and "collapsed" in str(row["validity"])
    table2, effects = results["diverse"]
    assert (effects["validity"] == "valid").all() and (table2["validity"] == "valid").all()


def test_an_autoencoder_that_does_not_carry_a_tissue_gates_only_that_tissue():
    rng = np.random.default_rng(2)
    ids = [f"sub-{i}" for i in range(10)]
    real = _volumes(ids, rng)
    recon = real.assign(ventricles_ml=38.0 + 1e-3 * np.arange(10))
    validity = assess(
        reconstruction_check(real, recon),
        real,
        {"all": _volumes([f"s{i}" for i in range(10)], rng)},
        {"all": ids},
        DEFAULT_THRESHOLDS,
        TISSUES,
    )
    assert validity.of(["all"], ["gm"]) == "valid"
    assert "does not carry ventricles" in validity.of(["all"], ["ventricles"])
    # a region or a map that no single tissue stands for needs every tissue carried
    assert "does not carry ventricles" in validity.of(["all"], ["gm"], carried=None)

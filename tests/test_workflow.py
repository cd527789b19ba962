"""The Snakemake workflow itself: lint, and one real end-to-end run of the DAG on a small simulated cohort."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from conftest import e2e_config_args as _config_args
from conftest import run_snakemake as _snakemake

from morphgen.preprocess.derivatives import find_preprocessed
from morphgen.space import Grid


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
        img = nib.load(find_preprocessed(R, sid))
        assert img.shape == grid.shape
        np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)
        data = img.get_fdata()
        assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1 and data.max() > 0.5
        anat = R / f"preprocessed/{sid}/anat"
        assert {p.name for p in anat.iterdir()} == {  # BIDS-derivatives names, as fMRIPrep writes them
            f"{sid}_space-MNI152NLin2009aSym_res-4mm_desc-preproc_T1w.nii.gz",
            f"{sid}_space-MNI152NLin2009aSym_res-4mm_desc-brain_mask.nii.gz",
        }
        assert next((R / f"preprocessed/{sid}/figures").glob("*_desc-qc_T1w.png")).stat().st_size > 1000
    description = json.loads((R / "preprocessed/dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "morphgen"

    for subpop_dir in sorted((R / "samples").iterdir()):
        scores = pd.read_csv(subpop_dir / "scores.tsv", sep="\t")
        assert len(scores) == 4 and scores["kept"].astype(bool).sum() == 2
        for f in sorted(subpop_dir.glob("sample-*.nii.gz")):
            img = nib.load(f)
            assert img.get_data_dtype() == np.float32
            np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)
            assert np.isfinite(img.get_fdata()).all()

    real = pd.read_csv(R / "volumes/real.tsv", sep="\t", dtype={"participant_id": str})
    assert len(real) == len(subjects)
    # segmented in jobs of evaluation.images_per_job (7) subjects, joined in subject order
    batches = sorted((R / "volumes/real").glob("batch-*.tsv"))
    assert len(batches) == -(-len(subjects) // 7) >= 2
    joined = pd.concat([pd.read_csv(b, sep="\t", dtype={"participant_id": str}) for b in batches])
    assert list(joined["participant_id"]) == list(real["participant_id"]) == list(subjects["participant_id"])
    for batch in batches:  # each job's label maps are its own subjects'
        labels = R / "segmentation/real" / batch.name.removesuffix(".tsv")
        assert sorted(p.name.split("_")[0] for p in labels.glob("*_dseg.nii.gz")) == sorted(
            pd.read_csv(batch, sep="\t", dtype={"participant_id": str})["participant_id"]
        )
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
    assert recon["verdict"].str.match(r"^(carries|does not carry: .+)$").all() and "slope" in recon
    dice = pd.read_csv(R / "tables/reconstruction_dice.tsv", sep="\t").set_index("subject")
    assert len(dice) == n_test + 2 and {"mean", "min"} <= set(dice.index)  # each test subject, the summaries
    assert dice[["dice_csf", "dice_gm", "dice_wm"]].apply(lambda c: c.between(0, 1)).all().all()
    fidelity = pd.read_csv(R / "tables/reconstruction_fidelity.tsv", sep="\t").iloc[0]
    assert fidelity["n_subjects"] == n_test and 0 < fidelity["msssim_min"] <= fidelity["msssim_mean"] <= 1
    assert np.isfinite(fidelity[["log_bmmd2", "real_log_bmmd2"]].astype(float)).all()
    recon_vbm = pd.read_csv(R / "tables/reconstruction_vbm.tsv", sep="\t").iloc[0]
    assert recon_vbm["n_subjects"] == n_test and recon_vbm["mask_voxels"] > 1000
    assert 0 <= recon_vbm["bonferroni_voxels"] <= recon_vbm["significant_voxels"] <= recon_vbm["mask_voxels"]
    np.testing.assert_allclose(nib.load(R / "vbm_reconstruction/t.nii.gz").affine, grid.affine, atol=1e-4)
    # every effect says whether it is a finding
    valid = r"^(valid|not a finding: .+)$"
    for table in ("table2_volumes", "subgroup_effects", "region_effects", "effect_agreement", "vbm"):
        column = pd.read_csv(R / f"tables/{table}.tsv", sep="\t")["validity"]
        assert column.astype(str).str.match(valid).all(), table
    truth_rows = pd.read_csv(R / "tables/volumetry_truth.tsv", sep="\t").set_index("tissue")
    assert "hippocampus" in truth_rows.index and truth_rows.loc["hippocampus", "n"] == len(subjects)
    for png in [
        "volumes.png",
        "loss_autoencoder.png",
        "loss_prior.png",
        "volumetry_truth.png",
        "reconstruction_volumes.png",
        "reconstruction_vbm.png",
    ]:
        assert (R / "figures" / png).stat().st_size > 1000
    assert len(list((R / "figures").glob("samples_*.png"))) == 4
    # FID needs configured feature networks: the columns say why they are empty
    assert (t1[["fid_axial", "fid_slices", "fid_3d"]] == "no weights configured").all(axis=None)
    assert (np.isfinite(t1["gr4ssim_mean"]) == np.isfinite(t1["msssim_mean"])).all()
    # regional volumes through the atlas: every subject, and the ventricles follow the simulated truth
    regions = pd.read_csv(R / "volumes/regions/real.tsv", sep="\t", dtype={"participant_id": str})
    truth = pd.read_csv(R / "demo_cohort/participants.tsv", sep="\t", dtype={"participant_id": str})
    both = regions.merge(truth, on="participant_id")
    assert len(both) == len(subjects)
    for region in ("lateral_ventricle", "hippocampus", "thalamus", "caudate", "putamen", "pallidum"):
        assert both[f"{region}_ml"].between(0.5, 100).all(), region
    # the subjects' own shapes (4 mm RMS) are what the 4 mm SyN must undo: on these 12 subjects the atlas's
    # ventricles follow the truth at r 0.74 (BENCHMARKS.md, "A demo cohort whose subjects differ")
    assert np.corrcoef(both["lateral_ventricle_ml"], both["true_ventricles_mni_ml"])[0, 1] > 0.6
    jacobians = sorted((R / "normalised/real").glob("batch-*/*_jacobian.nii.gz"))
    assert len(jacobians) == len(subjects)
    for jac in jacobians:
        np.testing.assert_allclose(nib.load(jac).affine, grid.affine, atol=1e-4)
    effects = pd.read_csv(R / "tables/region_effects.tsv", sep="\t")
    assert set(effects["name"]) == {"age-old vs age-young", "diagnosis-ad vs diagnosis-cn", "age", "M - F"}
    real_age_r = effects[effects.effect == "age_r"].set_index("region")["real"]
    # simulated: ventricles grow with age, designed at r 0.6 with a spread age does not explain; measured
    # through the atlas on 12 subjects it is 0.21 (sampling sd about 0.25), so only its sign is checked
    assert real_age_r["lateral_ventricle"] > 0.0
    agreement = pd.read_csv(R / "tables/effect_agreement.tsv", sep="\t")
    assert set(agreement["comparison"]) == {"cohen_d", "age_r", "sex_d", "real_vs_synthetic_d"}
    # VBM per contrast: real and synthetic t-maps on the grid, one correlation each
    vbm = pd.read_csv(R / "tables/vbm.tsv", sep="\t").set_index("name")
    assert list(vbm.index) == ["age", "diagnosis"] and (vbm["mask_voxels"] > 1000).all()
    for name in vbm.index:
        t_real = nib.load(R / "vbm" / name / "real_t.nii.gz")
        np.testing.assert_allclose(t_real.affine, grid.affine, atol=1e-4)
        assert (R / "figures" / "vbm" / f"{name}.png").stat().st_size > 5000
    has_synthetic = vbm["synthetic_significant_voxels"].notna()  # a group may keep fewer than two samples
    assert vbm.loc[has_synthetic, "t_map_correlation"].between(-1, 1).all()
    assert vbm.loc[~has_synthetic, "t_map_correlation"].isna().all()
    # memorisation: every kept sample once, one summary row per sub-population
    memo = pd.read_csv(R / "tables/memorisation.tsv", sep="\t")
    assert len(memo) == 4 * 2 and memo["distance"].ge(0).all() and memo["flagged"].dtype == bool
    assert len(pd.read_csv(R / "tables/memorisation_summary.tsv", sep="\t")) == 4
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
        "gather_real_volumes",
        "gather_real_regions",
        "table2_volumes",
        "volumetry_truth",
        "reconstruction_volumes",
        "normalise_real",
        "region_effects",
        "vbm",
        # generated images are unmixed with the real cohort's tissue intensities: measured again
        "segment_synthetic",
        "gather_synthetic_volumes",
        "normalise_synthetic",
        "gather_synthetic_regions",
        "segment_reconstructions",
        "gather_reconstruction_volumes",
        "reconstruction_dice",  # the real label maps and the reconstructions' both change
        "normalise_reconstructions",  # the reconstructions' grey matter, and their VBM against the originals
        "reconstruction_vbm",
        "table_pages",  # the tables' pages in the report
        "run_summary",  # the run's row of the family comparison, and the comparison
        "family_comparison",
        "all",
    }, out


@pytest.mark.slow
def test_an_evaluation_setting_reruns_only_the_rules_that_read_it(e2e_run, tmp_path):
    """A rule's params hold the evaluation keys it reads: more MS-SSIM pairs redo Table 1, a VBM threshold the
    VBM tables; neither registers or segments an image again."""
    work, R = e2e_run
    evaluation = yaml.safe_load((REPO / "config.yaml").read_text())["evaluation"]
    overlay = tmp_path / "evaluation.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "evaluation": {
                    "msssim_pairs": evaluation["msssim_pairs"] + 1,
                    "vbm": {"p_threshold": evaluation["vbm"]["p_threshold"] / 2},
                }
            }
        )
    )
    args = _config_args(R)
    args[args.index("--config") : args.index("--config")] = [str(overlay)]  # the last configfile
    proc = _snakemake(work, *args, "-n", "--quiet", "rules", "all")
    out = proc.stdout + proc.stderr
    planned = {line.split()[0] for line in out.splitlines() if line.strip() and line.split()[-1].isdigit()}
    assert {"table1_fidelity", "vbm"} <= planned, out
    assert not {r for r in planned if r.startswith(("normalise_", "segment_", "train_", "generate"))}, out


@pytest.mark.slow
def test_paper_redoes_tables_and_figures_from_the_intermediate_outputs(e2e_run):
    """`make paper`'s forced rules: only table and figure rules are planned, nothing upstream of them."""
    import re

    work, R = e2e_run
    text = (REPO / "Makefile").read_text()
    rules = re.search(r"PAPER_RULES := (.*?)\n\n", text, re.S).group(1).replace("\\", " ").split()

    def planned(*args: str) -> set[str]:
        proc = _snakemake(work, *_config_args(R), "-n", *args, "--quiet", "rules", "--", "paper")
        out = proc.stdout + proc.stderr
        names = {line.split()[0] for line in out.splitlines() if line.strip() and line.split()[-1].isdigit()}
        return names - {"total", "job"}

    # as the Makefile does: force only the paper rules that this configuration's DAG has
    in_dag = planned("--forceall")
    forced = [r for r in rules if r in in_dag]
    assert {"conditioning_check", "conditioning_grid"} & set(forced) == set()  # a conditioned family's
    assert planned("--forcerun", *forced) == set(forced) | {"paper"}


@pytest.mark.slow
def test_report_holds_the_tables_and_figures_with_captions(e2e_run):
    """Every figure and table of the run is in the report; tables as pages a reader can read (rounded)."""
    import re
    import zipfile

    work, R = e2e_run
    _snakemake(work, *_config_args(R), "--report", str(work / "report.zip"))
    with zipfile.ZipFile(work / "report.zip") as archive:
        names = archive.namelist()
        pages = {n: archive.read(n).decode("utf-8", "replace") for n in names if n.endswith(".html")}
    text = " ".join(pages.values())
    figures = sorted(p.name for p in (R / "figures").rglob("*.png"))
    tables = sorted(p.stem for p in (R / "tables").glob("*.tsv"))
    assert figures and tables
    for figure in figures:
        assert any(n.endswith("/" + figure) for n in names), f"{figure} is not in the report"
    for table in tables:  # each table as its own page, read in the browser (a TSV can only be downloaded)
        page = next((body for n, body in pages.items() if n.endswith(f"/{table}.html")), None)
        assert page is not None, f"tables/{table}.tsv has no page in the report"
        assert "<table>" in page and not re.search(r"\d\.\d{7,}", page), f"{table}: unrounded values"
    assert any(n.endswith("/qc_preprocessing.html") for n in names)
    assert "Table 1 (seed 000)" in text and "VBM t-maps like the paper" in text
    p_threshold = yaml.safe_load((REPO / "config.yaml").read_text())["evaluation"]["vbm"]["p_threshold"]
    assert f"p &lt; {p_threshold}" in text or f"p < {p_threshold}" in text  # the value, not the key
    assert "evaluation.vbm.p_threshold" not in text


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
            # seed 003's order: healthy brains first, then the patient group only
            "finetune": {"epochs": 6, "patience": 2, "validation_fraction": 0.25, "where": {"group": ["AD"]}},
        }
    }
    (tmp_path / "pretraining.yaml").write_text(yaml.safe_dump(overlay))
    args = _config_args(R)
    args[3:3] = [str(tmp_path / "pretraining.yaml")]
    target = str(R / "models/autoencoder/model.pt")
    plan = _snakemake(work, *args, "-n", "--quiet", "rules", "--", target).stdout
    assert "pretrain_autoencoder" in plan and "train_autoencoder" in plan
    images = sorted((R / "preprocessed").glob("*/anat/*_desc-preproc_T1w.nii.gz"))
    assert len(images) == 12  # the e2e cohort (a glob that finds nothing would make the check below vacuous)
    before = [p.stat().st_mtime_ns for p in images]
    _snakemake(work, *args, "--cores", "2", "--", target)
    assert [p.stat().st_mtime_ns for p in images] == before  # the main cohort was not preprocessed again
    assert len(list((R / "pretraining/preprocessed").glob("*/anat/*_desc-preproc_T1w.nii.gz"))) == 5

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
    patients = (train_b["group"] == "AD").sum()
    assert 2 <= patients < len(train_b)
    from morphgen.stages import finetune_validation

    split_seed = yaml.safe_load((REPO / "config.yaml").read_text())["split"]["seed"]
    held = finetune_validation(list(train_b.query("group == 'AD'")["participant_id"]), 0.25, split_seed)
    assert held and info["n_train"] == patients - len(held)  # the patients, less those held out to stop early
    assert not (R / "models/autoencoder/checkpoints").exists()


@pytest.mark.slow
def test_reconstruction_readout_reads_a_perfect_reconstruction_as_its_subject(e2e_run):
    """benchmarks/reconstruction_readout.py on the end-to-end run: the real test images read with their
    subject's intensities (fixed, or up to an affine map) are the real volumes; every reading covers every
    test subject."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from reconstruction_readout import TISSUES, readout

    from morphgen.tsv import read_tsv

    _, results = e2e_run
    table = readout(results, [])
    subjects = sorted(
        p.name.removesuffix(".nii.gz")
        for p in (results / "models/autoencoder/reconstructions").glob("*.nii.gz")
    )
    assert len(subjects) >= 2
    assert table.groupby("reading")["participant_id"].apply(sorted).map(lambda s: s == subjects).all()
    assert table["reading"].nunique() == 8
    real = read_tsv(results / "volumes/real.tsv").set_index("participant_id").loc[subjects]
    readings = (("perfect, subject's", 0.01), ("perfect, subject's up to an affine map", 0.04))
    for reading, tolerance in readings:
        perfect = table[table["reading"] == reading].set_index("participant_id").loc[subjects]
        for tissue in TISSUES:
            expected = real[f"{tissue}_ml"].to_numpy()
            assert perfect[tissue].to_numpy() == pytest.approx(expected, rel=tolerance), (reading, tissue)

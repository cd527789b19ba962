"""The benchmark scripts' own pieces, so that they keep working: MONAI's inferer through morphgen's view."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from monai.inferers import VQVAETransformerInferer
from monai.utils.ordering import Ordering

from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_monai_sampler import MonaiView, TokensOnly, latent_grid  # noqa: E402


def test_monai_inferer_samples_through_the_view_and_never_draws_bos():
    torch.manual_seed(0)
    model = CausalTransformer(9, 12, 16, 1, 2).eval()
    grid = latent_grid(12)
    ordering = Ordering(ordering_type="raster_scan", spatial_dims=3, dimensions=(1, *grid))
    start = torch.full((3, 1), 8, dtype=torch.long)
    tokens = VQVAETransformerInferer().sample(
        grid, start, TokensOnly(8), MonaiView(model), ordering, verbose=False
    )
    assert tuple(tokens.shape) == (3, *grid)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 8  # BOS (8) has probability 0
    logits = MonaiView(model)(torch.full((1, 4), 8))
    assert logits.shape == (1, 4, 9) and torch.isinf(logits[..., -1]).all()


def test_gpu_fragment_runs_every_tier_and_samples(tmp_path, capsys):
    """The GPU fragment's own code path, on CPU with the networks shrunk by an override file."""
    import gpu_fragment

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(
        "model:\n"
        "  autoencoder: {channels: [4, 4], num_res_layers: 1, num_res_channels: 4, codebook_size: 16,\n"
        "                embedding_dim: 4, disc_channels: 4, disc_layers: 2, precision: fp32}\n"
        "  prior: {layers: 1, d_model: 16, heads: 4, local_heads: 2, local_window: 4, precision: fp32}\n"
        "  sampling: {precision: fp32}\n"
    )
    tiers = ["configs/paper/gpu-24gb.yaml", "configs/paper/gpu-80gb.yaml"]
    gpu_fragment.main(
        ["--tiers", *tiers, "--override", str(tiny), "--shape", "16", "24", "16", "--steps", "1",
         "--prior-steps", "1", "--sample-batch", "1", "2", "--device", "cpu", "--isolate"]
    )  # fmt: skip
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [row[0] for row in lines[1:3]] == ["gpu-24gb", "gpu-80gb"]
    assert [row[1] for row in lines[1:3]] == ["3", "14"] and [row[6] for row in lines[1:3]] == ["9", "32"]
    assert all(float(row[4]) > 0 and float(row[7]) > 0 for row in lines[1:3])
    sampling = lines[4:]
    assert [row[0] for row in sampling] == ["1", "2"] and all(float(row[2]) > 0 for row in sampling)


def test_autoencoder_anatomy_trains_reconstructs_and_compares_volumes(tmp_path, monkeypatch, capsys):
    """benchmarks/autoencoder_anatomy.py end to end on four subjects, a small grid and a tiny network."""
    import autoencoder_anatomy

    tiny = {
        "architecture": "normalised",
        "quantiser": "fsq",
        "fsq_levels": "[5,4,3]",
        "channels": "[4,8,8]",
        "num_res_layers": "[0,1,1]",
        "norm_num_groups": 4,
        "epochs": 1,
        "batch_size": 2,
        "disc_channels": 4,
        "disc_layers": 2,
    }
    settings = [f"model.autoencoder.{k}={v}" for k, v in tiny.items()]
    settings += ["space.shape=[32,40,32]", "segmentation.atropos.iterations=2"]
    argv = ["autoencoder_anatomy.py", "--subjects", "4", "--test", "2", "--warp-mm", "2"]
    argv += ["--out", str(tmp_path)]
    for assignment in settings:
        argv += ["--set", assignment]
    monkeypatch.setattr(sys, "argv", argv)
    autoencoder_anatomy.main()
    import pandas as pd

    table = pd.read_csv(tmp_path / "agreement.tsv", sep="\t")
    assert set(table["tissue"]) == {"gm", "wm", "csf", "ventricles", "brain"}
    assert (table["real_sd"] > 0).all()  # subjects with their own shapes differ
    assert len(list((tmp_path / "reconstructions").glob("*.nii.gz"))) == 2
    assert "latent_positions_varying" in capsys.readouterr().out

    # --model: the trained autoencoder read again on the same subjects, nothing trained, the same table
    argv[argv.index("--out") + 1] = str(tmp_path / "read")
    monkeypatch.setattr(sys, "argv", [*argv, "--model", str(tmp_path / "model/model.pt")])
    autoencoder_anatomy.main()
    again = pd.read_csv(tmp_path / "read/agreement.tsv", sep="\t")
    assert not (tmp_path / "read/model").exists()
    columns = ["tissue", "r", "slope", "bias_percent", "real_sd", "reconstructed_sd"]
    pd.testing.assert_frame_equal(again[columns], table[columns])


def test_demo_diversity_measures_msssim_and_the_designed_effects(monkeypatch, capsys):
    """benchmarks/demo_diversity.py on four subjects: MS-SSIM falls when subjects get their own shapes."""
    import json

    import demo_diversity

    results = {}
    for warp in ("0", "4"):
        argv = ["demo_diversity.py", "--subjects", "4", "--warp-mm", warp]
        monkeypatch.setattr(sys, "argv", argv)
        demo_diversity.main()
        results[warp] = json.loads(capsys.readouterr().out)
    assert results["4"]["msssim_mean"] < results["0"]["msssim_mean"] < 1.0
    assert results["4"]["ventricles_sd_ml"] > 0 and "hippocampus_d_ad_vs_cn" in results["4"]


def test_reconstruction_probe_measures_how_much_of_each_subject_is_reproduced():
    """An identity autoencoder reproduces every subject (r 1, size 1, L1 0); one halfway to the mean image
    reproduces each subject's difference from the mean at half its size, in the right direction."""
    import numpy as np
    from reconstruction_probe import probe

    rng = np.random.default_rng(0)
    images = (0.5 + 0.2 * rng.random((5, 8, 8, 8))).astype(np.float32)
    mean = torch.from_numpy(images.mean(0))

    class Towards:
        def __init__(self, weight: float):
            self.weight = weight

        def reconstruction(self, model, x):
            return self.weight * x + (1 - self.weight) * mean

    same = probe(None, Towards(1.0), images)
    assert same["l1_reconstruction"] < 1e-7 and same["deviation_size_median"] == pytest.approx(1, abs=1e-5)
    halfway = probe(None, Towards(0.5), images)
    assert halfway["deviation_r_median"] == pytest.approx(1, abs=1e-5)
    assert halfway["deviation_size_median"] == pytest.approx(0.5, abs=1e-5)
    assert halfway["l1_reconstruction"] == pytest.approx(halfway["l1_mean_image"] / 2, rel=1e-4)


def test_the_masked_sampler_benchmark_times_both_samplers(capsys):
    import bench_masked_sampler

    bench_masked_sampler.main(
        ["--seq-len", "12", "--codebook-size", "8", "--layers", "1", "--d-model", "8", "--heads", "2",
         "--steps", "4", "--subcodes", "2", "--batch", "2", "--threads", "1", "--train-batch", "2",
         "--dropout", "0", "0.1"]
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1] == "sampler\tsteps\tseconds\ttokens_per_s"
    assert [line.split("\t")[:2] for line in lines[2:4]] == [
        ["autoregressive, cached", "12"],
        ["masked", "4"],
    ]
    assert [line.split("\t")[:2] for line in lines[5:]] == [["masked", "0"], ["masked", "0.1"]]

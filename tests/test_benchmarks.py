"""The benchmark scripts' own pieces, so that they keep working: MONAI's inferer through morphgen's view."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from monai.inferers import VQVAETransformerInferer
from monai.utils.ordering import Ordering

from morphgen.models.transformer import CausalTransformer

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

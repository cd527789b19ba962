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

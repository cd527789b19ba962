"""morphgen's cached sampler against MONAI's ``VQVAETransformerInferer.sample``, on one model, in one run.

Usage: python benchmarks/bench_monai_sampler.py [--seq-len 1400] [--batch-sizes 1 16] [--threads 2]
       [--layers 4 --d-model 128 --heads 4] [--attention exact] [--train-steps 30] [--device cpu]

The prior is trained for ``--train-steps`` steps on sequences of a Markov chain, so its next-token
distributions are peaked like a trained prior's (sampling cost does not depend on the weights). MONAI's
inferer sees the same network through a thin view (its call signature, a never-drawn BOS logit), recomputes
the whole prefix at every step and draws with ``torch.multinomial``; morphgen decodes one token per step from
its key/value cache. First-stage decoding is the same for both and is left out (MONAI is handed a stand-in
whose ``decode_samples`` returns the tokens), so the ratio is that of the two samplers.

Prints one row per (batch size, sampler): seconds, tokens per second, and the speed-up over MONAI. MONAI's
sampler is timed once (minutes per batch); morphgen's is the best of ``--repeats`` runs, as it takes about a
second at batch 1, where the machine's noise is a large part of one run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from monai.inferers import VQVAETransformerInferer
from monai.utils.ordering import Ordering

from morphgen.models.families.vqvae_transformer.prior import sample_tokens
from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer


class MonaiView(torch.nn.Module):
    """A :class:`CausalTransformer` with the interface MONAI's inferer calls: ``forward(x, context)`` and
    ``max_seq_len``, logits over the codebook plus a BOS column that MONAI zeroes anyway."""

    def __init__(self, model: CausalTransformer):
        super().__init__()
        self.model = model
        self.max_seq_len = model.seq_len + 1

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.model(x)
        bos = torch.full_like(logits[..., :1], -math.inf)
        return torch.cat([logits, bos], dim=-1)


class TokensOnly:
    """Stands in for MONAI's VQVAE: the BOS id MONAI needs, and decoding left out of the timing."""

    def __init__(self, codebook_size: int):
        self.num_embeddings = codebook_size

    def decode_samples(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


def train_briefly(model: CausalTransformer, steps: int, batch: int, seed: int = 0) -> None:
    """A few optimiser steps on Markov-chain sequences (mostly s -> s + 1), so predictions are peaked."""
    rng = np.random.default_rng(seed)
    k, length = model.codebook_size, model.seq_len
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    device = model.head.weight.device
    model.train()
    for _ in range(steps):
        seq = np.empty((batch, length), dtype=np.int64)
        seq[:, 0] = rng.integers(0, k, batch)
        for t in range(1, length):
            jump = rng.random(batch) < 0.1
            seq[:, t] = np.where(jump, rng.integers(0, k, batch), (seq[:, t - 1] + 1) % k)
        codes = torch.from_numpy(seq).to(device)
        inputs = torch.cat([torch.full_like(codes[:, :1], model.bos_token), codes[:, :-1]], 1)
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), codes.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def timed(fn) -> tuple[float, object]:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def latent_grid(seq_len: int) -> tuple[int, int, int]:
    """The paper's 10 x 14 x 10 for 1,400 tokens; otherwise (1, 1, seq_len)."""
    return (10, 14, 10) if seq_len == 1400 else (1, 1, seq_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1400)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--local-heads", type=int, default=0)
    parser.add_argument("--local-window", type=int, default=420)
    parser.add_argument("--attention", choices=["exact", "favor"], default="exact")
    parser.add_argument("--rezero", action="store_true")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--skip-monai", action="store_true", help="time morphgen's sampler only")
    parser.add_argument("--repeats", type=int, default=3, help="morphgen's time is the best of this many")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CausalTransformer(
        args.codebook_size + 1,
        args.seq_len,
        args.d_model,
        args.layers,
        args.heads,
        attention=args.attention,
        local_heads=args.local_heads,
        local_window=args.local_window if args.local_heads else None,
        rezero=args.rezero,
    ).to(args.device)
    train_briefly(model, args.train_steps, batch=4)
    grid = latent_grid(args.seq_len)
    ordering = Ordering(ordering_type="raster_scan", spatial_dims=3, dimensions=(1, *grid))
    inferer, view, stand_in = (
        VQVAETransformerInferer(),
        MonaiView(model).eval(),
        TokensOnly(args.codebook_size),
    )
    print(
        f"# seq_len {args.seq_len}, codebook {args.codebook_size}, layers {args.layers}, "
        f"d_model {args.d_model}, heads {args.heads} (local {args.local_heads}, window {args.local_window}), "
        f"attention {args.attention}, device {args.device}, threads {args.threads}, torch {torch.__version__}"
    )
    print("batch\tsampler\tseconds\ttokens_per_s\tspeed_up")
    for batch in args.batch_sizes:
        next(sample_tokens(model, batch, batch, seed=0, progress=False))  # warm-up
        runs = [
            timed(lambda b=batch: next(sample_tokens(model, b, b, seed=1, progress=False)))
            for _ in range(args.repeats)
        ]
        ours_s, tokens = min(runs, key=lambda run: run[0])
        n_tokens = batch * args.seq_len
        assert tokens.shape == (batch, args.seq_len)
        if args.skip_monai:
            print(f"{batch}\tmorphgen\t{ours_s:.2f}\t{n_tokens / ours_s:.0f}\t")
            continue
        start = torch.full((batch, 1), args.codebook_size, dtype=torch.long, device=args.device)
        monai_s, monai_tokens = timed(
            lambda s=start: inferer.sample(grid, s, stand_in, view, ordering, verbose=False)
        )
        assert tuple(monai_tokens.shape) == (batch, *grid)
        print(f"{batch}\tmonai\t{monai_s:.2f}\t{n_tokens / monai_s:.0f}\t1.0")
        print(f"{batch}\tmorphgen\t{ours_s:.2f}\t{n_tokens / ours_s:.0f}\t{monai_s / ours_s:.1f}")


if __name__ == "__main__":
    main()

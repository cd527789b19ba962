"""Time ``sample_tokens`` with and without the key/value cache at the demo prior size.

Usage: python benchmarks/bench_sampler.py [--threads 2] [--device cpu] [--batch-sizes 1 8] [--repeats 1]

A randomly initialised model has the same cost as a trained one. Prints one row per (batch size, path):
seconds per batch, tokens per second, and whether the cached and uncached tokens were identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from morphgen.models.families.vqvae_transformer.prior import sample_tokens
from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer


def time_sampling(
    model: CausalTransformer, batch: int, use_cache: bool, repeats: int
) -> tuple[float, np.ndarray]:
    """Best wall time (s) over ``repeats`` to sample one batch, and the tokens of the last run."""
    best, tokens = float("inf"), None
    for _ in range(repeats):
        if model.head.weight.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = next(sample_tokens(model, batch, batch, seed=0, use_cache=use_cache, progress=False))
        if model.head.weight.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=288)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CausalTransformer(args.codebook_size + 1, args.seq_len, args.d_model, args.layers, args.heads)
    model = model.to(args.device).eval()
    print(
        f"# seq_len {args.seq_len}, codebook {args.codebook_size}, layers {args.layers}, "
        f"d_model {args.d_model}, heads {args.heads}, device {args.device}, threads {args.threads}, "
        f"torch {torch.__version__}"
    )
    print("batch\tpath\tseconds\ttokens_per_s\tspeed_up\tsame_tokens")
    for batch in args.batch_sizes:
        time_sampling(model, batch, True, 1)  # warm-up (allocator, kernels)
        cached_s, cached = time_sampling(model, batch, True, args.repeats)
        uncached_s, uncached = time_sampling(model, batch, False, args.repeats)
        same = bool(np.array_equal(cached, uncached))
        n_tokens = batch * args.seq_len
        speed_up = uncached_s / cached_s
        print(f"{batch}\tuncached\t{uncached_s:.2f}\t{n_tokens / uncached_s:.0f}\t1.0\t{same}")
        print(f"{batch}\tcached\t{cached_s:.2f}\t{n_tokens / cached_s:.0f}\t{speed_up:.1f}\t{same}")


if __name__ == "__main__":
    main()

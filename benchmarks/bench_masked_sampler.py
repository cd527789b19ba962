"""Time seed 002's masked prior against seed 000's cached autoregressive sampler, one run, same length.

Usage: python benchmarks/bench_masked_sampler.py [--seq-len 1152] [--steps 64 256] [--subcodes 3]
       [--batch 8] [--threads 2] [--device cpu] [--train-batch 16 --dropout 0 0.1]

Both transformers get the same width, depth and heads and random weights (a trained model costs the same).
The autoregressive sampler takes one cached step per token; the masked one takes ``steps`` passes over each
sub-code, each pass over the sub-code and the one before it, whatever the length. Prints seconds per batch
and tokens per second for each; with ``--train-batch``, also the masked prior's training step (forward,
backward, Adam) at each ``--dropout``, best of three.
"""

from __future__ import annotations

import argparse
import time

import torch

from morphgen.models.families.brainsynth.absorbing import MaskedTokenTransformer
from morphgen.models.families.brainsynth.prior import example_loss, sample_sequences
from morphgen.models.families.vqvae_transformer.prior import sample_tokens
from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1152, help="tokens per image (demo BrainSynth: 1,152)")
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 256], help="masked diffusion steps T")
    parser.add_argument("--subcodes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-batch", type=int, default=0, help="also time training steps of this batch")
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.1])
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = (args.d_model, args.layers, args.heads)
    print(
        f"# seq_len {args.seq_len}, codebook {args.codebook_size}, layers {args.layers}, "
        f"d_model {args.d_model}, heads {args.heads}, batch {args.batch}, subcodes {args.subcodes}, "
        f"device {args.device}, threads {args.threads}, torch {torch.__version__}"
    )
    print("sampler\tsteps\tseconds\ttokens_per_s")
    causal = CausalTransformer(args.codebook_size + 1, args.seq_len, *shape).to(device).eval()
    seconds = timed(lambda: next(sample_tokens(causal, args.batch, args.batch, seed=0, progress=False)))
    print(f"autoregressive, cached\t{args.seq_len}\t{seconds:.2f}\t{args.batch * args.seq_len / seconds:.0f}")
    for steps in args.steps:
        masked = MaskedTokenTransformer(
            args.codebook_size,
            args.seq_len // args.subcodes,
            steps,
            d_model=args.d_model,
            layers=args.layers,
            heads=args.heads,
            conditioned=args.subcodes > 1,
            subcodes=args.subcodes,
        )
        masked = masked.to(device).eval()
        generator = torch.Generator(device=device).manual_seed(0)
        seconds = timed(lambda m=masked, g=generator: sample_sequences(m, args.batch, g, device=device))
        print(f"masked\t{steps}\t{seconds:.2f}\t{args.batch * args.seq_len / seconds:.0f}")
    if args.train_batch:
        print("training\tdropout\tseconds_per_step")
        for dropout in args.dropout:
            print(f"masked\t{dropout:g}\t{train_step(args, dropout, device):.2f}")


def train_step(args, dropout: float, device: torch.device) -> float:
    """Best of three training steps of the masked prior on random sub-codes."""
    length = args.seq_len // args.subcodes
    model = MaskedTokenTransformer(
        args.codebook_size, length, max(args.steps), d_model=args.d_model, layers=args.layers,
        heads=args.heads, dropout=dropout, conditioned=args.subcodes > 1, subcodes=args.subcodes,
    ).to(device)  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    shape = (args.train_batch, length)
    target, previous = (
        torch.randint(0, args.codebook_size, shape),
        torch.randint(0, args.codebook_size, shape),
    )
    index = torch.randint(0, args.subcodes, (args.train_batch,))
    generator = torch.Generator().manual_seed(0)

    def step():
        loss = example_loss(model, target.to(device), previous.to(device), index.to(device), generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return min(timed(step) for _ in range(3))


if __name__ == "__main__":
    main()

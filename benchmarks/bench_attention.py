"""The prior's two attention back-ends at the paper's size: training step time, activation memory, sampling.

Usage: python benchmarks/bench_attention.py [--seq-len 1400] [--layers 24 --d-model 256 --heads 16]
       [--local-heads 8 --local-window 420] [--batch 1] [--sample-batch 1 16] [--threads 2] [--device cpu]

For ``exact`` (softmax through ``scaled_dot_product_attention``) and ``favor`` (FAVOR+), with the paper's
head layout (8 of 16 heads local, window 420, ReZero): seconds per training step (forward, backward, AdamW),
the activation memory of one training sequence (estimated by morphgen.models.memory; on a GPU also the
measured peak), and cached sampling speed in tokens per second.
"""

from __future__ import annotations

import argparse
import time

import torch

from morphgen.models.families.vqvae_transformer.prior import build_prior, sample_tokens
from morphgen.models.memory import GIB, estimate_prior_training


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1400)
    parser.add_argument("--codebook-size", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--local-heads", type=int, default=8)
    parser.add_argument("--local-window", type=int, default=420)
    parser.add_argument("--batch", type=int, default=1, help="training batch")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    parser.add_argument("--sample-batch", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"# seq_len {args.seq_len}, layers {args.layers}, d_model {args.d_model}, heads {args.heads} "
        f"(local {args.local_heads}, window {args.local_window}), ReZero, batch {args.batch}, "
        f"{args.precision}, device {args.device}, threads {args.threads}, torch {torch.__version__}"
    )
    print("attention\ttrain_step_s\tactivations_GiB_per_seq\tmeasured_peak_GiB\tsample_batch\ttokens_per_s")
    for attention in ("exact", "favor"):
        cfg = {
            "layers": args.layers,
            "d_model": args.d_model,
            "heads": args.heads,
            "local_heads": args.local_heads,
            "local_window": args.local_window,
            "attention": attention,
            "rezero": True,
            "dropout": 0.0,
        }
        torch.manual_seed(0)
        model = build_prior(args.codebook_size, args.seq_len, cfg).to(args.device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        autocast = torch.autocast(
            device_type=torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16"
        )
        tokens = torch.randint(0, args.codebook_size, (args.batch, args.seq_len + 1), device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.steps + 1):
            sync(args.device)
            start = time.perf_counter()
            with autocast:
                logits = model(tokens[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            sync(args.device)
            if step:
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / GIB if args.device.startswith("cuda") else float("nan")
        estimate = estimate_prior_training(cfg, args.seq_len, args.codebook_size, args.precision)
        model.eval()
        for batch in args.sample_batch:
            next(
                sample_tokens(model, batch, batch, seed=0, progress=False, precision=args.precision)
            )  # warm-up
            sync(args.device)
            start = time.perf_counter()
            next(sample_tokens(model, batch, batch, seed=1, progress=False, precision=args.precision))
            sync(args.device)
            rate = batch * args.seq_len / (time.perf_counter() - start)
            memory = f"{estimate.per_sample / GIB:.3f}\t{peak:.2f}"
            print(f"{attention}\t{min(times):.2f}\t{memory}\t{batch}\t{rate:.0f}", flush=True)


if __name__ == "__main__":
    main()

"""The masked (absorbing-diffusion) prior over token sequences, in sub-codes: seed 002's stage-II transformer.

A sequence of L tokens is cut into ``subcodes`` equal runs (seed 002: three slabs of 48 slices along the first
image axis, so the latent's first axis must divide). One bidirectional transformer learns every sub-code n
given sub-code n - 1 (n = 1: an empty condition) with a learnt index embedding. Sampling draws sub-code 1
fully masked by progressive unmasking, then each next one given the last.

Training resumes mid-epoch and is deterministic on CPU for a seed: each epoch's order comes from a generator
seeded by (seed, epoch), each step's timesteps and masks from one seeded by (seed, step), and the checkpoint
keeps torch's random state (dropout). The validation loss uses the same masks every epoch.

``heldout.tsv``: the held-out negative ELBO in nats per token, a stratified Monte-Carlo estimate of
sum_t (1/t) E[sum over masked tokens of -log p(x_0 | x_t)] (t in 1..T, cut into ``elbo_strata`` strata with
one uniform draw each per sub-code), against the unigram code frequencies of the training tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from morphgen.errors import ConfigError
from morphgen.models.engine.baselines import unigram_nll
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.models.engine.data import torch_generator
from morphgen.models.engine.loop import EpochLoop
from morphgen.models.engine.resume import RunCheckpoint
from morphgen.models.families.brainsynth.absorbing import (
    MaskedTokenTransformer,
    mask_tokens,
    masked_loss,
    sample,
)
from morphgen.tsv import write_tsv
from morphgen.weights import load_weights_only

CHECKPOINT_FORMAT = "morphgen-masked-prior-checkpoint-2"  # 2: the shared epoch loop's layout
MODEL_FORMAT = "morphgen-masked-prior-1"
LOSS_COLUMNS = ["epoch", "step", "train_loss", "val_loss"]
DEFAULTS = {"steps": 256, "subcodes": 3, "d_model": 512, "layers": 12, "heads": 8, "dropout": 0.0}


def network_config(vocabulary: int, length: int, cfg: dict) -> dict:
    """The transformer's shape from ``model.prior`` for sequences of ``length`` tokens; ConfigError naming the
    key when the sequence does not cut into the sub-codes."""
    subcodes = int(cfg.get("subcodes", DEFAULTS["subcodes"]))
    if subcodes < 1 or length % subcodes:
        raise ConfigError(
            f"model.prior.subcodes: {length} tokens per image do not cut into {subcodes} equal sub-codes"
        )
    net = {key: cfg.get(key, value) for key, value in DEFAULTS.items()}
    return {
        "vocabulary": int(vocabulary),
        "length": length // subcodes,
        "steps": int(net["steps"]),
        "d_model": int(net["d_model"]),
        "layers": int(net["layers"]),
        "heads": int(net["heads"]),
        "dropout": float(net["dropout"]),
        "subcodes": subcodes,
    }


def build_masked_prior(net: dict) -> MaskedTokenTransformer:
    return MaskedTokenTransformer(
        net["vocabulary"],
        net["length"],
        net["steps"],
        d_model=net["d_model"],
        layers=net["layers"],
        heads=net["heads"],
        dropout=net["dropout"],
        conditioned=net["subcodes"] > 1,
        subcodes=net["subcodes"],
    )


def subcode_examples(tokens: torch.Tensor, subcodes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (sequence, sub-code) pair of ``tokens`` (N, L) as a training example, sequence-major: the target
    sub-code (N * subcodes, L / subcodes), its condition (the previous sub-code; the empty token ``-1`` for
    the first) and its index."""
    n, length = tokens.shape
    parts = tokens.reshape(n, subcodes, length // subcodes)
    previous = torch.cat([torch.full_like(parts[:, :1], -1), parts[:, :-1]], dim=1)
    index = torch.arange(subcodes).repeat(n)
    return parts.flatten(0, 1), previous.flatten(0, 1), index


def _condition(model: MaskedTokenTransformer, previous: torch.Tensor) -> torch.Tensor:
    return torch.where(previous < 0, torch.full_like(previous, model.empty_id), previous)


def example_loss(
    model: MaskedTokenTransformer,
    target: torch.Tensor,
    previous: torch.Tensor,
    index: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The reweighted ELBO of one batch of examples, t and masks drawn from ``generator``."""
    steps = model.time.num_embeddings - 1
    t = torch.randint(1, steps + 1, (len(target),), generator=generator).to(target.device)
    noisy, masked = mask_tokens(target, t, steps, model.mask_id, generator)
    logits = model(noisy, t, _condition(model, previous), index)
    return masked_loss(logits, target, masked, t, steps)


@torch.no_grad()
def mean_loss(model, examples, batch_size: int, seed: int) -> float:
    """The reweighted ELBO over ``examples``, with the same t and masks at every call."""
    was_training = model.training
    model.eval()
    generator = torch_generator(seed, "masked prior validation")
    target, previous, index = examples
    total = 0.0
    for start in range(0, len(target), batch_size):
        chunk = slice(start, start + batch_size)
        loss = example_loss(model, target[chunk], previous[chunk], index[chunk], generator)
        total += float(loss) * len(target[chunk])
    model.train(was_training)
    return total / max(len(target), 1)


@torch.no_grad()
def heldout_elbo(model: MaskedTokenTransformer, tokens: torch.Tensor, strata: int, seed: int) -> float:
    """The negative ELBO of ``tokens`` (N, L) in nats per token (module docstring); deterministic."""
    model.eval()
    steps = model.time.num_embeddings - 1
    subcodes = model.subcode.num_embeddings
    target, previous, index = subcode_examples(tokens, subcodes)
    condition = _condition(model, previous)
    bounds = np.linspace(0, steps, min(int(strata), steps) + 1).round().astype(int)
    generator = torch_generator(seed, "masked prior elbo")
    total = torch.zeros(len(target), dtype=torch.float64)
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        t = torch.randint(int(low) + 1, int(high) + 1, (len(target),), generator=generator)
        noisy, masked = mask_tokens(target, t, steps, model.mask_id, generator)
        logits = model(noisy, t, condition, index)
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total += ((ce * masked).sum(1) * (high - low) / t).double()
    return float(total.sum() / tokens.numel())


def _fingerprint(train: np.ndarray, val: np.ndarray, net: dict, cfg: dict, seed: int) -> str:
    digest = hashlib.sha256()
    for arr in (train, val):
        digest.update(str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return json.dumps({"data": digest.hexdigest(), "net": net, "cfg": cfg, "seed": seed}, sort_keys=True)


def train_masked_prior(
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    vocabulary: int,
    cfg: dict,
    out_dir: Path,
    seed: int,
    extra: dict | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) the masked prior on token sequences (N, L) in ``out_dir``; returns ``model.pt``.

    ``cfg``: ``config['model']['prior']`` (epochs, batch_size, lr, grad_clip, elbo_strata and the network's
    keys of :data:`DEFAULTS`). ``extra`` goes into ``model.pt`` as is. Writes ``loss.tsv`` and
    ``checkpoints/last.pt`` every epoch (and the checkpoint on a stop signal), ``heldout.tsv`` at the end.
    """
    out_dir = Path(out_dir)
    try:
        epochs, batch_size, lr = int(cfg["epochs"]), int(cfg["batch_size"]), float(cfg["lr"])
    except KeyError as exc:
        raise ConfigError(f"model.prior.{exc.args[0]} is missing from the configuration") from None
    train_tokens, val_tokens = np.asarray(train_tokens), np.asarray(val_tokens)
    for name, tokens in (("training", train_tokens), ("validation", val_tokens)):
        if tokens.ndim != 2 or not len(tokens) or tokens.min() < 0 or tokens.max() >= vocabulary:
            raise ConfigError(
                f"the masked prior's {name} tokens must be sequences (N, L) of codes below {vocabulary}, "
                f"got {tokens.shape}"
            )
    if val_tokens.shape[1] != train_tokens.shape[1]:
        raise ConfigError(
            f"validation sequences have {val_tokens.shape[1]} tokens, training ones {train_tokens.shape[1]}"
        )
    net = network_config(vocabulary, train_tokens.shape[1], cfg)
    grad_clip = float(cfg.get("grad_clip", 1.0))
    torch.manual_seed(seed)
    model = build_masked_prior(net)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    train = subcode_examples(torch.from_numpy(train_tokens).long(), net["subcodes"])
    val = subcode_examples(torch.from_numpy(val_tokens).long(), net["subcodes"])

    def update(index: torch.Tensor, step: int) -> torch.Tensor:
        loss = example_loss(
            model, *[part[index] for part in train], torch_generator(seed, "masked prior step", step)
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimiser.step()
        return loss

    loop = EpochLoop(
        run=RunCheckpoint(
            out_dir, CHECKPOINT_FORMAT, _fingerprint(train_tokens, val_tokens, net, cfg, seed), "prior"
        ),
        parts={"model": model, "optimiser": optimiser},
        examples=len(train[0]),
        batch_size=batch_size,
        epochs=epochs,
        order=lambda epoch: torch.randperm(
            len(train[0]), generator=torch_generator(seed, "masked prior order", epoch)
        ),
        update=update,
        validate=lambda: mean_loss(model, val, batch_size, seed),
        loss_table=out_dir / "loss.tsv",
        columns=LOSS_COLUMNS,
        description="masked prior steps",
        keep_random_state=True,
    )
    loop.fit(progress)

    strata = int(cfg.get("elbo_strata", 16))
    model_nll = heldout_elbo(model, torch.from_numpy(val_tokens).long(), strata, seed)
    baseline = unigram_nll(train_tokens, val_tokens, vocabulary)
    heldout = {
        "model_nll_per_token": model_nll,
        "unigram_nll_per_token": baseline,
        "ratio": model_nll / baseline,
    }
    write_tsv(pd.DataFrame([{**heldout, "val_sequences": len(val_tokens)}]), out_dir / "heldout.tsv")
    path = out_dir / "model.pt"
    save_atomic(
        {
            "format": MODEL_FORMAT,
            "network": net,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "seed": seed,
            "info": {"epochs": loop.epoch, "steps": loop.step, "n_train": len(train_tokens), **(extra or {})},
        },
        path,
    )
    return path


def load_masked_prior(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[MaskedTokenTransformer, dict]:
    """The transformer of a ``model.pt`` of :func:`train_masked_prior` (eval mode), and the file's content."""
    saved = load_weights_only(path, "masked prior file")
    if saved.get("format") != MODEL_FORMAT:
        raise ConfigError(f"{path} is not a morphgen masked prior (expected format {MODEL_FORMAT!r})")
    model = build_masked_prior(saved["network"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), saved


@torch.no_grad()
def sample_sequences(
    model: MaskedTokenTransformer,
    n: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` token sequences (n, subcodes x length): each sub-code drawn by progressive unmasking given the
    one before it."""
    steps = model.time.num_embeddings - 1
    parts: list[torch.Tensor] = []
    for k in range(model.subcode.num_embeddings):
        index = torch.full((n,), k, dtype=torch.long, device=device)

        def denoise(x, t, condition, index=index):
            return model(x, t, condition, index)

        condition = parts[-1] if parts else None
        parts.append(
            sample(denoise, n, model.length, steps, model.mask_id, condition, temperature, generator, device)
        )
    return torch.cat(parts, dim=1)

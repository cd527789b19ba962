"""Training, loading and sampling the autoregressive prior over VQ-VAE token sequences.

Files written by :func:`train_prior` in ``out_dir``:

- ``model.pt``: ``{"format", "hparams", "state_dict", "codebook_size", "seed", "val_nll", "info"}`` (plain
  types and tensors only, so ``torch.load(path, weights_only=True)`` works); read it with :func:`load_prior`.
- ``checkpoints/last.pt``: everything needed to resume after the last finished epoch (rewritten atomically
  each epoch), or from within an epoch when a stop signal (SIGTERM, SIGUSR1) ended the run. A rerun with the
  same data, configuration and seed resumes from it and ends with exactly the weights of an uninterrupted
  run; a checkpoint from other data or settings is ignored.
- ``loss.tsv``: ``epoch``, ``step``, ``train_loss`` (mean cross-entropy per token, dropout on),
  ``val_nll_per_token``.
- ``heldout.tsv``: one row: ``model_nll_per_token``, ``unigram_nll_per_token``, ``ratio`` (model / unigram),
  ``val_sequences``, ``val_tokens``. NLLs are in nats per token on the held-out sequences; the unigram
  baseline uses Laplace-smoothed code frequencies of the training tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from morphgen.errors import ConfigError
from morphgen.models.engine.baselines import unigram_nll
from morphgen.models.engine.checkpoint import save_atomic
from morphgen.models.engine.loop import EpochLoop
from morphgen.models.engine.precision import autocast_for
from morphgen.models.engine.resume import RunCheckpoint
from morphgen.models.families.vqvae_transformer.transformer import CausalTransformer
from morphgen.tsv import write_tsv
from morphgen.weights import load_weights_only

MODEL_FORMAT = "morphgen-prior-v1"
CHECKPOINT_FORMAT = "morphgen-prior-checkpoint-v2"  # v2: the shared epoch loop's layout
LOSS_COLUMNS = ["epoch", "step", "train_loss", "val_nll_per_token"]

# optional keys of config['model']['prior'] and their defaults
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_GRAD_CLIP = 1.0
DEFAULT_WARMUP_FRACTION = 0.05


# --------------- file helpers


# --------------- token checks


def _check_tokens(tokens: np.ndarray, codebook_size: int, what: str) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 2:
        raise ValueError(f"{what} tokens must be a 2D array (sequences, length), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} tokens must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= codebook_size):
        raise ValueError(
            f"{what} tokens must lie in [0, {codebook_size}) (codebook_size), got [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.int64, copy=False)


def _with_bos(codes: torch.Tensor, bos: int) -> torch.Tensor:
    """Model inputs for next-token prediction: BOS followed by all codes but the last."""
    bos_column = torch.full((codes.shape[0], 1), bos, dtype=torch.long, device=codes.device)
    return torch.cat([bos_column, codes[:, :-1]], dim=1)


# --------------- likelihoods


@torch.no_grad()
def heldout_nll(model: CausalTransformer, tokens: np.ndarray | torch.Tensor, batch_size: int = 16) -> float:
    """Mean negative log-likelihood (nats per token) of ``tokens`` (N, seq_len) under ``model``, eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    codes = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device)
    total, count = 0.0, 0
    try:
        for i in range(0, codes.shape[0], batch_size):
            batch = codes[i : i + batch_size]
            logits = model(_with_bos(batch, model.bos_token))
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), batch.reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += batch.numel()
    finally:
        model.train(was_training)
    return total / count if count else math.nan


# --------------- training


def build_prior(codebook_size: int, seq_len: int, cfg: dict) -> CausalTransformer:
    """The transformer described by ``config['model']['prior']`` (see :class:`CausalTransformer`)."""
    local_heads = int(cfg.get("local_heads", 0) or 0)
    return CausalTransformer(
        codebook_size + 1,
        seq_len,
        int(cfg["d_model"]),
        int(cfg["layers"]),
        int(cfg["heads"]),
        float(cfg["dropout"]),
        attention=str(cfg.get("attention", "exact")),
        local_heads=local_heads,
        local_window=int(cfg["local_window"]) if local_heads else None,
        favor_features=cfg.get("favor_features"),
        rezero=bool(cfg.get("rezero", False)),
        activation_checkpointing=bool(cfg.get("activation_checkpointing", False)),
    )


def training_step(
    model: CausalTransformer,
    codes: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    grad_clip: float = DEFAULT_GRAD_CLIP,
) -> torch.Tensor:
    """One update on ``codes`` (B, seq_len): BOS-prefixed next-token cross-entropy (float32), gradients
    clipped to ``grad_clip``, one optimiser step. Returns the loss."""
    with autocast():
        logits = model(_with_bos(codes, model.bos_token))
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), codes.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


def _cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    # derived from (seed, epoch) alone, so a resumed run shuffles exactly like an uninterrupted one
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(n, generator=torch.Generator().manual_seed(state))


def _fingerprint(train: np.ndarray, val: np.ndarray, codebook_size: int, cfg: dict, seed: int) -> str:
    """What a checkpoint must match to be resumed: data, vocabulary, settings and seed."""
    digest = hashlib.sha256()
    for arr in (train, val):
        digest.update(str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    settings = {key: cfg[key] for key in sorted(cfg)}
    return json.dumps(
        {"data": digest.hexdigest(), "codebook_size": codebook_size, "cfg": settings, "seed": seed},
        sort_keys=True,
        default=str,
    )


def train_prior(
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    codebook_size: int,
    cfg: dict,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    *,
    device: str | torch.device | None = None,
    extra: dict | None = None,
) -> None:
    """Train a :class:`CausalTransformer` on token sequences by next-token cross-entropy; write its files.

    Args:
        train_tokens, val_tokens: integer arrays (N, L) and (M, L) of codebook indices, M >= 1.
        codebook_size: number of codebook entries K; the BOS token id is K.
        cfg: ``config['model']['prior']``: ``layers``, ``d_model``, ``heads``, ``dropout``, ``epochs``,
            ``batch_size``, ``lr``; optional ``weight_decay`` (0.01), ``grad_clip`` (1.0, max gradient norm),
            ``warmup_fraction`` (0.05 of the steps, then cosine decay to 0), ``precision`` (fp32 | bf16
            autocast), and the architecture options of :func:`build_prior` (``attention``, ``local_heads``,
            ``local_window``, ``favor_features``, ``rezero``, ``activation_checkpointing``).
        out_dir: folder for ``model.pt``, ``checkpoints/last.pt``, ``loss.tsv`` and ``heldout.tsv``.
        seed: seeds initialisation, shuffling and dropout; on CPU the run is deterministic.
        progress: show tqdm bars on stderr.
        device: where to train (default: CUDA when available, else CPU).
        extra: kept in ``model.pt`` as ``info`` (the family's positions, for instance).

    The caller's global torch RNG state is left as it was.
    """
    train = _check_tokens(train_tokens, codebook_size, "training")
    val = _check_tokens(val_tokens, codebook_size, "held-out")
    if train.shape[0] == 0 or val.shape[0] == 0:
        raise ValueError(
            f"train_prior needs training and held-out sequences, got {train.shape[0]} and {val.shape[0]}"
        )
    if train.shape[1] != val.shape[1]:
        raise ValueError(f"training sequences have length {train.shape[1]}, held-out ones {val.shape[1]}")
    missing = [
        key
        for key in ("layers", "d_model", "heads", "dropout", "epochs", "batch_size", "lr")
        if key not in cfg
    ]
    if missing:
        raise ValueError(f"model.prior configuration lacks {', '.join(missing)}")

    out_dir = Path(out_dir)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        _train(train, val, codebook_size, cfg, out_dir, seed, progress, device, extra or {})


def _train(
    train: np.ndarray,
    val: np.ndarray,
    codebook_size: int,
    cfg: dict,
    out_dir: Path,
    seed: int,
    progress: bool,
    device: torch.device,
    extra: dict,
) -> None:
    epochs, batch_size = int(cfg["epochs"]), int(cfg["batch_size"])
    seq_len = train.shape[1]
    torch.manual_seed(seed)
    model = build_prior(codebook_size, seq_len, cfg).to(device)
    autocast = autocast_for(cfg.get("precision", "fp32"), device)

    # no weight decay on biases and LayerNorm gains
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": float(cfg.get("weight_decay", DEFAULT_WEIGHT_DECAY))},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=float(cfg["lr"]),
        betas=(0.9, 0.95),
    )
    steps_per_epoch = math.ceil(train.shape[0] / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, round(float(cfg.get("warmup_fraction", DEFAULT_WARMUP_FRACTION)) * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(total_steps, warmup))
    grad_clip = float(cfg.get("grad_clip", DEFAULT_GRAD_CLIP))

    codes = torch.as_tensor(train, dtype=torch.long)

    def update(index: torch.Tensor, step: int) -> torch.Tensor:
        loss = training_step(model, codes[index].to(device), optimizer, autocast, grad_clip)
        scheduler.step()
        return loss

    loop = EpochLoop(
        run=RunCheckpoint(
            out_dir, CHECKPOINT_FORMAT, _fingerprint(train, val, codebook_size, cfg, seed), "prior"
        ),
        parts={"model": model, "optimizer": optimizer, "scheduler": scheduler},
        examples=codes.shape[0],
        batch_size=batch_size,
        epochs=epochs,
        order=lambda epoch: _epoch_permutation(codes.shape[0], seed, epoch),
        update=update,
        validate=lambda: heldout_nll(model, val, batch_size),
        loss_table=out_dir / "loss.tsv",
        columns=LOSS_COLUMNS,
        description="prior steps",
        keep_random_state=True,
        device=device,
    )
    loop.fit(progress)

    model_nll = heldout_nll(model, val, batch_size)
    baseline = unigram_nll(train, val, codebook_size)
    loop.write_loss_table()  # also when no epoch was left to run
    nll = {
        "model_nll_per_token": model_nll,
        "unigram_nll_per_token": baseline,
        "ratio": model_nll / baseline,
        "val_sequences": val.shape[0],
        "val_tokens": val.size,
    }
    write_tsv(pd.DataFrame([nll]), out_dir / "heldout.tsv")
    save_atomic(
        {
            "format": MODEL_FORMAT,
            "hparams": model.hparams(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "codebook_size": codebook_size,
            "seed": seed,
            "val_nll": model_nll,
            "info": extra,
        },
        out_dir / "model.pt",
    )


# --------------- loading


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> CausalTransformer:
    """Load a prior written by :func:`train_prior` (``model.pt``), in eval mode on ``device``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prior model file does not exist: {path}")
    saved = load_weights_only(path, "prior model file")  # ConfigError naming the file if unreadable
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ConfigError(f"{path} is not a morphgen prior model (expected format {MODEL_FORMAT!r})")
    hparams = {**saved["hparams"], "activation_checkpointing": False}  # a training-time option
    model = CausalTransformer(**hparams)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


# --------------- sampling


GUMBEL_BLOCK = 64  # decoding steps whose Gumbel noise is drawn at once (fewer small ops per token)


def _gumbel_noise(steps: int, shape: tuple[int, int], generator: torch.Generator, device) -> torch.Tensor:
    """Gumbel noise (steps, batch, codes) in float64, drawn from ``generator`` in one call."""
    uniform = torch.rand((steps, *shape), generator=generator, dtype=torch.float64, device=device)
    return -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float64).tiny)))


def _draw(logits: torch.Tensor, temperature: float, top_k: int | None, gumbel: torch.Tensor) -> torch.Tensor:
    """One token per row by Gumbel-max on ``logits / temperature`` restricted to the top ``top_k`` entries.

    Works in float64 (exact for float32 logits; adding the float64 noise promotes), so both decoding paths
    make the same draws from the same noise.
    """
    scaled = logits if temperature == 1.0 else logits.double() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    return torch.argmax(scaled + gumbel, dim=-1)


@torch.inference_mode()
def _sample_batch(
    model: CausalTransformer,
    batch: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    use_cache: bool,
    on_step: Callable[[], None],
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    token_ranges: np.ndarray | None = None,
) -> np.ndarray:
    device = next(model.parameters()).device
    seq = torch.full((batch, model.seq_len + 1), model.bos_token, dtype=torch.long, device=device)
    cache = model.new_cache(batch) if use_cache else None
    values = torch.arange(model.codebook_size, device=device)
    for i in range(model.seq_len):
        if i % GUMBEL_BLOCK == 0:
            steps = min(GUMBEL_BLOCK, model.seq_len - i)
            noise = _gumbel_noise(steps, (batch, model.codebook_size), generator, device)
        with autocast():
            if cache is not None:
                logits = model(seq[:, i : i + 1], cache)[:, -1]
            else:  # recompute the whole prefix each step
                logits = model(seq[:, : i + 1])[:, -1]
        if token_ranges is not None:  # only the values this position can hold
            low, high = (int(v) for v in token_ranges[i])
            logits = logits.masked_fill((values < low) | (values >= high), -math.inf)
        seq[:, i + 1] = _draw(logits, temperature, top_k, noise[i % GUMBEL_BLOCK])
        on_step()
    return seq[:, 1:].cpu().numpy()


def sample_tokens(
    model: CausalTransformer,
    n: int,
    batch_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
    progress: bool = True,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
    token_ranges: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Draw ``n`` token sequences of length ``model.seq_len`` (BOS not included), ``batch_size`` at a time.

    Yields int64 arrays (b, seq_len); the last batch may be smaller. The draws come from one generator seeded
    with ``seed``, so the same arguments give the same tokens, with or without the key/value cache. A
    ``generator`` given instead (``seed`` is then unused) continues from its state: a generation that was
    stopped after whole batches resumes with the draws it would have made.
    ``top_k=1`` is greedy decoding. The model is put in eval mode while sampling. ``precision="bf16"``
    runs the network under bfloat16 autocast (faster on GPUs; draws are still made in float64).
    ``token_ranges`` (seq_len, 2): position ``i`` draws only values in ``[low, high)`` (a multi-level
    sequence, where each level has its own part of the vocabulary).
    """
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or >= 1, got {top_k}")
    if token_ranges is not None:
        token_ranges = np.asarray(token_ranges, dtype=np.int64)
        bad = (token_ranges[:, 0] < 0) | (token_ranges[:, 1] > model.codebook_size)
        if (
            token_ranges.shape != (model.seq_len, 2)
            or bad.any()
            or (token_ranges[:, 1] <= token_ranges[:, 0]).any()
        ):
            raise ValueError(
                f"token_ranges must give each of the {model.seq_len} positions a non-empty [low, high) "
                f"within the vocabulary of {model.codebook_size}"
            )
    device = next(model.parameters()).device
    autocast = autocast_for(precision, device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(seed)
    bar = tqdm(total=n * model.seq_len, desc="sampling", unit="tok", disable=not progress)
    try:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            was_training = model.training
            model.eval()
            try:
                tokens = _sample_batch(
                    model,
                    b,
                    temperature,
                    top_k,
                    generator,
                    use_cache,
                    lambda b=b: bar.update(b),
                    autocast,
                    token_ranges,
                )
            finally:
                model.train(was_training)
            yield tokens  # outside inference mode and with the caller's train/eval state restored
    finally:
        bar.close()

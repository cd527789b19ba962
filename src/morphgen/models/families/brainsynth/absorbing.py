"""Absorbing (masked) discrete diffusion over token sequences, as seed 002's prior, with Unleashing
Transformers' rules (seed-specs, choice 4): training masks each token with probability t/T and weights the
cross-entropy summed over the masked tokens by (1 - t/T); sampling starts fully masked and, from t = T down to
1, unmasks each still-masked token with probability 1/t, drawing it from the denoiser's prediction."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock
from torch import nn

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def mask_tokens(
    tokens: torch.Tensor, t: torch.Tensor, steps: int, mask_id: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_t | x_0): tokens (B, L), t (B,) in 1..steps; returns x_t and the mask (True where masked)."""
    chance = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    masked = chance < (t.float() / steps)[:, None]
    return torch.where(masked, torch.full_like(tokens, mask_id), tokens), masked


def masked_loss(
    logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, t: torch.Tensor, steps: int
) -> torch.Tensor:
    """(1 - t/T) x the cross-entropy summed over masked tokens, per token of the sequence, batch mean."""
    ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (B, L)
    per_sequence = (ce * masked).sum(1) / tokens.shape[1]
    return ((1.0 - t.float() / steps) * per_sequence).mean()


def training_loss(
    denoise: Denoiser,
    tokens: torch.Tensor,
    steps: int,
    mask_id: int,
    condition: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One Monte-Carlo draw of the reweighted ELBO: t uniform in 1..steps per sequence."""
    t = torch.randint(1, steps + 1, (len(tokens),), generator=generator, device=tokens.device)
    noisy, masked = mask_tokens(tokens, t, steps, mask_id, generator)
    return masked_loss(denoise(noisy, t, condition), tokens, masked, t, steps)


@torch.no_grad()
def sample(
    denoise: Denoiser,
    n: int,
    length: int,
    steps: int,
    mask_id: int,
    condition: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` sequences of ``length`` tokens, every position unmasked by t = 1."""
    x = torch.full((n, length), mask_id, dtype=torch.long, device=device)
    unmasked = torch.zeros_like(x, dtype=torch.bool)
    for step in range(steps, 0, -1):
        t = torch.full((n,), step, dtype=torch.long, device=device)
        changes = (torch.rand(x.shape, generator=generator, device=device) < 1.0 / step) & ~unmasked
        if not changes.any():
            continue
        logits = denoise(x, t, condition) / temperature
        probabilities = torch.softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])
        drawn = torch.multinomial(probabilities, 1, generator=generator).reshape(x.shape)
        x = torch.where(changes, drawn, x)
        unmasked |= changes
    return x


class MaskedTokenTransformer(nn.Module):
    """A bidirectional transformer (MONAI ``TransformerBlock``, not causal) that predicts every token of x_t
    from x_t, the step t and, for sub-code n > 1, the tokens of sub-code n - 1 placed before x_t, with a
    learnt embedding of the sub-code's index n (``subcodes`` of them; seed-specs, choice 5). Its input
    vocabulary has the mask token (``vocabulary``) and an empty condition (``vocabulary + 1``); its output is
    the ``vocabulary`` codes only."""

    def __init__(
        self,
        vocabulary: int,
        length: int,
        steps: int,
        d_model: int = 512,
        layers: int = 12,
        heads: int = 8,
        dropout: float = 0.0,
        conditioned: bool = True,
        subcodes: int = 1,
    ):
        super().__init__()
        self.vocabulary, self.length, self.conditioned = int(vocabulary), int(length), bool(conditioned)
        self.mask_id, self.empty_id = self.vocabulary, self.vocabulary + 1
        span = 2 * self.length if self.conditioned else self.length
        self.token = nn.Embedding(self.vocabulary + 2, d_model)
        self.position = nn.Parameter(torch.zeros(1, span, d_model))
        self.segment = nn.Embedding(2, d_model)  # condition, then x_t
        self.time = nn.Embedding(int(steps) + 1, d_model)
        self.subcode = nn.Embedding(max(int(subcodes), 1), d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d_model, 4 * d_model, heads, dropout_rate=dropout, causal=False, use_flash_attention=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.vocabulary)
        nn.init.normal_(self.position, std=0.02)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor | None = None,
        subcode: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, L, vocabulary) of x_t (B, L); ``condition`` (B, L) may hold the empty token for rows of
        sub-code 1; ``subcode`` (B,) each row's sub-code index from 0 (default 0)."""
        h = self.token(x) + self.segment.weight[1]
        if self.conditioned:
            if condition is None:  # sub-code 1: an empty condition
                condition = torch.full_like(x, self.empty_id)
            h = torch.cat([self.token(condition) + self.segment.weight[0], h], dim=1)
        if subcode is None:
            subcode = torch.zeros_like(t)
        h = h + self.position[:, : h.shape[1]] + (self.time(t) + self.subcode(subcode))[:, None]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, -x.shape[1] :]))

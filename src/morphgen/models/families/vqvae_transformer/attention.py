"""Causal self-attention back-ends of the prior: exact softmax (optionally local) and FAVOR+ (the Performer).

The paper's prior (Tudosiu et al. 2022, appendix 6.2) is a Performer with 16 heads, 8 of them local with a
window of 420 tokens. Here a layer's heads are split the same way: the first ``local_heads`` heads use exact
softmax attention over a sliding window (a query sees itself and the ``window - 1`` positions before it); the
other, global heads use either exact causal softmax attention (``backend="exact"``, through
``scaled_dot_product_attention``) or FAVOR+ (``backend="favor"``: positive orthogonal random features,
Choromanski et al. 2021), whose cost grows linearly with the sequence length.

Both back-ends decode token by token from a cache: softmax heads keep keys and values, FAVOR+ heads keep the
running sums of ``phi(k) v^T`` and ``phi(k)``, so a decoding step costs the same at every position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("exact", "favor")
F_MIN = torch.float32  # FAVOR+ sums are kept in at least this precision
FAVOR_CHUNK = 64  # positions per block of the causal FAVOR+ prefix sums (memory vs Python-loop overhead)


def default_favor_features(head_dim: int) -> int:
    """The Performer's default number of random features: ``head_dim * ln(head_dim)``."""
    return max(1, int(head_dim * math.log(max(head_dim, 2))))


def orthogonal_gaussian_features(
    features: int, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(features, dim)`` projection: blocks of orthogonal rows with chi-distributed norms (FAVOR+)."""
    blocks = []
    for _ in range(math.ceil(features / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # signs of R's diagonal make Q uniformly distributed (Haar); without them the estimate is biased
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    rows = torch.cat(blocks)[:features]
    norms = torch.randn(features, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (rows * norms).float()


def favor_logits(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """Exponents of the positive random features: ``phi(x) = exp(w x' - |x'|^2 / 2)``, ``x' = x d^(-1/4)``.

    With these, ``E[phi(q) . phi(k)] = exp(q . k / sqrt(d))``: the softmax kernel. Returned without the
    exponential so callers can subtract a stabiliser first.
    """
    x = x * x.shape[-1] ** -0.25
    return x @ projection.T.to(x.dtype) - 0.5 * (x * x).sum(-1, keepdim=True)


class FavorState:
    """Running FAVOR+ sums of a layer's global heads: ``kv`` (B, H, m, d), ``z`` (B, H, m), ``shift`` (B, H).

    Keys' features are stored as ``exp(logit - shift)`` with ``shift`` the largest key exponent seen so far;
    when a larger one arrives the sums are rescaled. A common factor cancels in ``num / den``, so this equals
    the unstabilised sums while never overflowing.
    """

    def __init__(self, batch: int, heads: int, features: int, head_dim: int, device, dtype):
        self.kv = torch.zeros(batch, heads, features, head_dim, device=device, dtype=dtype)
        self.z = torch.zeros(batch, heads, features, device=device, dtype=dtype)
        self.shift = torch.full((batch, heads), -math.inf, device=device, dtype=dtype)


def favor_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    state: FavorState | None = None,
    chunk: int = FAVOR_CHUNK,
) -> torch.Tensor:
    """Causal FAVOR+ attention of ``q, k, v`` (B, H, T, d), continuing ``state`` (updated in place) if given.

    Position ``i`` attends to positions ``<= i`` (and to everything already summed in ``state``). Computed
    in blocks of ``chunk`` positions: within a block by a masked product, across blocks by running sums, so
    memory is ``O(T m)`` rather than ``O(T m d)``. Works in float32 or wider whatever the input precision.
    """
    out_dtype = q.dtype
    dtype = torch.promote_types(q.dtype, F_MIN)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    b, h, t, d = q.shape
    m = projection.shape[0]
    if state is None:
        state = FavorState(b, h, m, d, q.device, dtype)
    q_logits = favor_logits(q, projection)
    phi_q = torch.exp(q_logits - q_logits.amax(-1, keepdim=True))  # a per-query factor cancels in num / den
    k_logits = favor_logits(k, projection)
    outputs = []
    for start in range(0, t, chunk):
        stop = min(start + chunk, t)
        kl = k_logits[:, :, start:stop]
        shift = torch.maximum(state.shift, kl.detach().amax((-2, -1)))
        rescale = torch.exp(state.shift - shift)[..., None]
        kv = state.kv * rescale[..., None]
        z = state.z * rescale
        phi_k = torch.exp(kl - shift[..., None, None])
        pq, vc = phi_q[:, :, start:stop], v[:, :, start:stop]
        within = (pq @ phi_k.transpose(-1, -2)).tril()
        num = pq @ kv + within @ vc
        den = (pq * z[:, :, None]).sum(-1) + within.sum(-1)
        outputs.append(num / den.clamp_min(torch.finfo(dtype).tiny)[..., None])
        state.kv = kv + phi_k.transpose(-1, -2) @ vc
        state.z = z + phi_k.sum(-2)
        state.shift = shift
    return torch.cat(outputs, dim=2).to(out_dtype)


def local_causal_mask(
    queries: int, keys: int, start: int, window: int | None, device, first_key: int = 0
) -> torch.Tensor:
    """Boolean mask (queries, keys - first_key): query ``i`` (position ``start + i``) sees key positions
    ``first_key <= j <= start + i`` and, with a window, ``j > start + i - window``."""
    pos_q = torch.arange(start, start + queries, device=device)[:, None]
    pos_k = torch.arange(first_key, keys, device=device)[None, :]
    allowed = pos_k <= pos_q
    if window is not None:
        allowed &= pos_k > pos_q - window
    return allowed


class AttentionCache:
    """What one layer keeps between decoding steps: softmax keys/values and the FAVOR+ sums."""

    def __init__(
        self,
        batch: int,
        softmax_heads: int,
        favor_heads: int,
        max_len: int,
        head_dim: int,
        features: int,
        device,
        dtype,
    ):
        # keys and values in one tensor: one copy per decoding step writes both
        self.kv = torch.zeros((2, batch, softmax_heads, max_len, head_dim), device=device, dtype=dtype)
        self.favor = (
            FavorState(batch, favor_heads, features, head_dim, device, torch.promote_types(dtype, F_MIN))
            if favor_heads
            else None
        )


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``local_heads`` windowed softmax heads, the rest global.

    Args:
        d_model, heads: width and number of heads (``d_model`` divisible by ``heads``).
        dropout: attention-weight dropout of softmax heads and output dropout (training only).
        local_heads, window: how many heads attend only to the last ``window`` positions (0: none).
        backend: ``"exact"`` or ``"favor"`` for the global heads.
        features: FAVOR+ random features per head (default ``head_dim * ln(head_dim)``).
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        dropout: float = 0.0,
        *,
        local_heads: int = 0,
        window: int | None = None,
        backend: str = "exact",
        features: int | None = None,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        if backend not in BACKENDS:
            raise ValueError(f"attention back-end must be one of {BACKENDS}, got {backend!r}")
        if not 0 <= local_heads <= heads:
            raise ValueError(f"local_heads must be in [0, heads={heads}], got {local_heads}")
        if local_heads and (window is None or window < 1):
            raise ValueError(f"local heads need a window >= 1, got {window}")
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.local_heads = local_heads
        self.window = int(window) if local_heads else None
        self.backend = backend
        self.global_heads = heads - local_heads
        self.favor_heads = self.global_heads if backend == "favor" else 0
        self.softmax_heads = heads - self.favor_heads
        self.features = int(features) if features else default_favor_features(self.head_dim)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.out_dropout = nn.Dropout(dropout)
        if self.favor_heads:
            # fixed features, saved with the weights so sampling uses the ones the model was trained with
            self.register_buffer("projection", orthogonal_gaussian_features(self.features, self.head_dim))
        else:
            self.projection = None

    def new_cache(self, batch: int, max_len: int, device, dtype) -> AttentionCache:
        return AttentionCache(
            batch,
            self.softmax_heads,
            self.favor_heads,
            max_len,
            self.head_dim,
            self.features,
            device,
            dtype,
        )

    def forward(self, x: torch.Tensor, cache: AttentionCache | None = None, start: int = 0) -> torch.Tensor:
        """Attend ``x`` (B, T, d) causally to itself and, with a cache, to the ``start`` positions before."""
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, t, hd)
        parts = []
        if self.softmax_heads == self.heads:  # no slicing: decoding one token is bound by op count
            parts.append(self._softmax(qkv[0], qkv[1:], cache, start))
        elif self.softmax_heads:
            s = self.softmax_heads
            parts.append(self._softmax(qkv[0, :, :s], qkv[1:, :, :s], cache, start))
        if self.favor_heads:
            s = self.softmax_heads
            q, k, v = qkv[:, :, s:]
            state = cache.favor if cache is not None else None
            parts.append(favor_causal(q, k, v, self.projection, state))
        y = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        y = self.out(y.transpose(1, 2).reshape(b, t, d))
        return self.out_dropout(y) if self.training else y

    def _softmax(self, q, kv, cache: AttentionCache | None, start: int) -> torch.Tensor:
        """Softmax heads: the first ``local_heads`` windowed, the others (exact back-end) global.

        ``q`` is (B, H, t, hd), ``kv`` the new keys and values stacked (2, B, H, t, hd).
        """
        t = q.shape[2]
        end = start + t
        dropout_p = self.dropout if self.training else 0.0
        if cache is not None:
            if end > cache.kv.shape[3]:
                raise ValueError(
                    f"key/value cache holds {cache.kv.shape[3]} positions, asked to write up to {end}"
                )
            cache.kv[:, :, :, start:end] = kv
            kv = cache.kv[:, :, :, :end]
        k, v = kv
        outputs = []
        local = self.local_heads
        if local:
            first = max(0, start - self.window + 1)  # the earliest position any query here can see
            mask = local_causal_mask(t, end, start, self.window, q.device, first_key=first)
            outputs.append(
                F.scaled_dot_product_attention(
                    q[:, :local],
                    k[:, :local, first:],
                    v[:, :local, first:],
                    attn_mask=mask,
                    dropout_p=dropout_p,
                )
            )
        if q.shape[1] > local:
            qg, kg, vg = (q, k, v) if not local else (q[:, local:], k[:, local:], v[:, local:])
            if start == 0:
                yg = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=dropout_p, is_causal=True)
            elif t == 1:  # one new token sees every cached position
                yg = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=dropout_p)
            else:  # a chunk after a prefix: query i (position start + i) sees keys 0 .. start + i
                mask = local_causal_mask(t, end, start, None, q.device)
                yg = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask, dropout_p=dropout_p)
            outputs.append(yg)
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]

"""Unpadding: a padded batch runs its token-wise layers on the real tokens only (as ModernBERT does).

    RealTokens     where a batch's real tokens sit; select() [B, L, ...] -> [N, ...], scatter() back (zeros at padding)
    PooledTokens   the one token per row that first/last-token pooling reads, so the last block computes it alone

The Transformer (modeling_scratchformer.py) hands them through its blocks: projections, MLP, norms and residual sums
treat each token on its own and run on [N, ...]; attention gets the [B, L, ...] layout back. Same results up to float
rounding (config.unpad_inputs switches it off).
"""

import functools

import torch

from .configuration_scratchformer import ScratchformerConfig


class RealTokens:
    """Where the real (non-padding) tokens of a padded [B, L] batch sit, so token-wise layers skip the padding.

    Projections, MLP, norms and residual sums treat each token on its own: they run on the [N, ...] real tokens.
    Only attention needs the [B, L, ...] layout; it gets the tokens scattered back into it (zeros at the padding).
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.attention_mask = attention_mask
        self.shape = attention_mask.shape
        self.indices = attention_mask.flatten().nonzero().squeeze(1)

    @functools.cached_property
    def right_padded(self) -> bool:
        """Padding only after each row's real tokens: causal attention never looks forward onto it (asked by causal
        stacks only)."""
        return bool((self.attention_mask[:, 1:] <= self.attention_mask[:, :-1]).all())

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, ...] -> [N, ...]: the real tokens only."""
        return x.flatten(0, 1).index_select(0, self.indices)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, L, ...]: the real tokens back in their places, zeros at the padding."""
        padded = x.new_zeros(self.shape.numel(), *x.shape[1:]).index_copy_(0, self.indices, x)  # in place: no clone
        return padded.view(*self.shape, *x.shape[1:])


def real_tokens(config: ScratchformerConfig, attention_mask: torch.Tensor | None, length: int) -> RealTokens | None:
    """The real tokens of a padded batch of `length` new tokens, or None when there is nothing to skip (or
    `config.unpad_inputs` is off)."""
    if not config.unpad_inputs or attention_mask is None or attention_mask.dim() != 2:
        return None
    if torch.compiler.is_compiling():  # traced (compile, export): its shapes depend on the mask's values: a traced graph keeps the padded layout (same results)
        return None
    if attention_mask.shape[-1] != length or attention_mask.all():
        return None
    return RealTokens(attention_mask)


class PooledTokens:
    """The one token per row that a first/last-token pooling reads, so the last block computes only its output.

    Exact, not an approximation: the blocks before still run on every token, and the last block's keys and values
    come from all of them; only its queries, output projection, MLP and norms shrink to one token per row.
    """

    def __init__(self, positions: torch.Tensor, length: int, tokens: RealTokens | None):
        self.positions = positions  # [B]
        self.unpadded = tokens is not None
        flat = torch.arange(positions.shape[0], device=positions.device) * length + positions
        # Row of each pooled token in the [B*L] padded layout, or among the [N] real tokens of an unpadded batch
        # (where a row of padding only, having none, reads a real token: finite, and its logits mean nothing).
        self.rows = (torch.searchsorted(tokens.indices, flat).clamp(max=tokens.indices.shape[0] - 1)
                     if self.unpadded else flat)

    def select(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[B, L, H] (or [N, H] unpadded) -> [B, 1, H]: the pooled tokens' vectors."""
        flat = hidden_states if self.unpadded else hidden_states.flatten(0, 1)
        return flat.index_select(0, self.rows).unsqueeze(1)

    def queries(self, query: torch.Tensor) -> torch.Tensor:
        """[B, heads, L, D] -> [B, heads, 1, D]: the pooled tokens' queries."""
        batch, heads, _, head_dim = query.shape
        return query.gather(2, self.positions.view(batch, 1, 1, 1).expand(batch, heads, 1, head_dim))

    def mask_rows(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The pooled tokens' rows of a [B or 1, 1, L, L] attention mask (a [.., 1, L] one serves every row as is)."""
        if attention_mask is None or attention_mask.shape[-2] == 1:
            return attention_mask
        batch, length = self.positions.shape[0], attention_mask.shape[-1]
        rows = attention_mask.expand(batch, -1, -1, -1)
        return rows.gather(2, self.positions.view(batch, 1, 1, 1).expand(batch, rows.shape[1], 1, length))

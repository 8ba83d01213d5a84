"""Unpadding: a padded batch runs its token-wise layers on the real tokens only (as ModernBERT does).

Projections, MLP, norms and residual sums treat each token on its own, so they may run on the N real tokens of a
batch packed into one row, [1, N, C] (transformers' padding-free layout), instead of the padded [B, L, C]. Only
attention needs the padded layout back. The Transformer (modeling_scratchformer.py) attaches this at a few marked
points, and nothing of it is threaded through its forwards by name:

    Unpadding          one stack's forward: enter() packs the hidden states (and rotary tables, and a decoder's
                       source), its block_kwargs ride in the blocks' **kwargs, leave() restores [B, L, C]
    padded_attention   wraps the attention function: the packed queries, keys and values go back to [B, h, L, D] for
                       it, and its output comes back packed (padded_for_cache: keys a cache stores, beforehand)
    PooledTokens       the one token per row that first/last-token pooling reads: the last block computes it alone

Same results up to float rounding; `config.unpad_inputs` switches it off.
"""

import functools

import torch

from .configuration_scratchformer import ScratchformerConfig


class RealTokens:
    """Where the real (non-padding) tokens of a padded [B, L] batch sit."""

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
        """[B, L, ...] -> [1, N, ...]: the real tokens only, packed into one row."""
        return x.flatten(0, 1).index_select(0, self.indices).unsqueeze(0)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """[1, N, ...] -> [B, L, ...]: the real tokens back in their places, zeros at the padding."""
        x = x[0]
        padded = x.new_zeros(self.shape.numel(), *x.shape[1:]).index_copy_(0, self.indices, x)  # in place: no clone
        return padded.view(*self.shape, *x.shape[1:])

    def scatter_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[1, h, N, D] -> [B, h, L, D], laid out as the heads of a padded [B, L, h*D] projection."""
        return self.scatter(x.transpose(1, 2)).transpose(1, 2)


def real_tokens(config: ScratchformerConfig, attention_mask: torch.Tensor | None, length: int) -> RealTokens | None:
    """The real tokens of a padded batch of `length` new tokens, or None when there is nothing to skip (or
    `config.unpad_inputs` is off)."""
    if not config.unpad_inputs or attention_mask is None or attention_mask.dim() != 2:
        return None
    if torch.compiler.is_compiling():  # traced (compile, export): its shapes would depend on the mask's values
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
        flat = torch.arange(positions.shape[0], device=positions.device) * length + positions
        # Row of each pooled token in the [B*L] padded layout, or among the [N] real tokens of an unpadded batch
        # (where a row of padding only, having none, reads a real token: finite, and its logits mean nothing).
        self.rows = (torch.searchsorted(tokens.indices, flat).clamp(max=tokens.indices.shape[0] - 1)
                     if tokens is not None else flat)

    def select(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[B, L, C] (or [1, N, C] unpadded) -> [B, 1, C]: the pooled tokens' vectors."""
        return hidden_states.flatten(0, 1).index_select(0, self.rows).unsqueeze(1)

    def queries(self, query: torch.Tensor) -> torch.Tensor:
        """[B, h, L, D] -> [B, h, 1, D]: the pooled tokens' queries."""
        batch, heads, _, head_dim = query.shape
        return query.gather(2, self.positions.view(batch, 1, 1, 1).expand(batch, heads, 1, head_dim))

    def mask_rows(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The pooled tokens' rows of a [B or 1, 1, L, L] attention mask (a [.., 1, L] one serves every row as is)."""
        if attention_mask is None or attention_mask.shape[-2] == 1:
            return attention_mask
        batch, length = self.positions.shape[0], attention_mask.shape[-1]
        rows = attention_mask.expand(batch, -1, -1, -1)
        return rows.gather(2, self.positions.view(batch, 1, 1, 1).expand(batch, rows.shape[1], 1, length))


def attended_rows(hidden_states: torch.Tensor, pooled: PooledTokens | None = None, **kwargs) -> torch.Tensor:
    """The rows of the residual stream that the block's self-attention computed: all of them, or (in the last block
    of a first/last-token pooling) the pooled ones, [B, 1, C]. Called with the block's **kwargs."""
    return hidden_states if pooled is None else pooled.select(hidden_states)


def padded_attention(attention_function):
    """`attention_function` (eager, sdpa, flash, ...) run in the padded layout it expects, whatever the blocks' layout:
    packed queries, keys and values are scattered back to [B, h, L, D] (a decoder's source keys by their own mask),
    and the output [B, L, h, D] is packed again; with `pooled`, only the pooled tokens' queries attend."""

    @functools.wraps(attention_function)
    def attend(module, query, key, value, attention_mask, real_tokens: RealTokens | None = None,
               source_tokens: RealTokens | None = None, pooled: PooledTokens | None = None, keys_padded: bool = False,
               **kwargs):
        key_tokens = None if keys_padded else source_tokens if module.is_cross_attention else real_tokens
        if real_tokens is not None:
            query = real_tokens.scatter_heads(query)
        if key_tokens is not None:
            key, value = key_tokens.scatter_heads(key), key_tokens.scatter_heads(value)
        if pooled is not None:  # keys and values of every token, queries of the pooled ones
            query, attention_mask = pooled.queries(query), pooled.mask_rows(attention_mask)
        output, weights = attention_function(module, query, key, value, attention_mask, **kwargs)
        if real_tokens is not None and pooled is None:
            output = real_tokens.select(output)
        return output, weights

    return attend


def padded_for_cache(module, key, value, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed keys and values [1, h, N, D] back to [B, h, L, D] before a cache stores them (it keeps each row's
    keys), marking them so in the attention call's `kwargs`; padded ones come back as they are."""
    tokens = kwargs.get("source_tokens" if module.is_cross_attention else "real_tokens")
    if tokens is None:
        return key, value
    kwargs["keys_padded"] = True
    return tokens.scatter_heads(key), tokens.scatter_heads(value)


class Unpadding:
    """How one forward pass of a stack skips its batch's padding.

    `keep_padded`: the caller needs the padded layout throughout (per-layer hidden states are returned padded; a
    trace keeps one layout). `past_length`: tokens already cached, whose keys a step attends to padded (its
    source's too). `output_positions` ([B]): compute the last block for these tokens only. `encoder_attention_mask`:
    a decoder's source, whose real tokens its cross-attention keys and values are made of.
    """

    def __init__(self, config: ScratchformerConfig, attention_mask, length: int, keep_padded: bool, past_length: int,
                 num_blocks: int, output_positions=None, encoder_attention_mask=None, source_length: int = 0):
        self.tokens = None if keep_padded or past_length else real_tokens(config, attention_mask, length)
        # (A traced step's past length may be a tensor: no branch on it. real_tokens keeps a trace padded anyway.)
        self.source_tokens = (None if torch.compiler.is_compiling() or encoder_attention_mask is None or past_length
                              else real_tokens(config, encoder_attention_mask, source_length))
        self.pooled = None if output_positions is None else PooledTokens(output_positions, length, self.tokens)
        self.num_blocks = num_blocks

    def padding_mask(self, attention_mask, is_causal: bool):
        """The padding mask attention needs. None for a causal stack whose rows are all right-padded: a real token's
        causal view holds no padding, and the padding's outputs are dropped (SDPA then runs its is_causal kernel)."""
        return None if self.tokens is not None and is_causal and self.tokens.right_padded else attention_mask

    def enter(self, hidden_states, rotary, encoder_hidden_states):
        """Pack the stack's inputs: [B, L, C] -> [1, N, C], the rotary (cos, sin) tables alike, and the source."""
        if self.tokens is not None:
            hidden_states = self.tokens.select(hidden_states)
            if rotary is not None:
                rotary = tuple(self.tokens.select(table.expand(*self.tokens.shape, -1)) for table in rotary)
        if self.source_tokens is not None:
            encoder_hidden_states = self.source_tokens.select(encoder_hidden_states)
        return hidden_states, rotary, encoder_hidden_states

    def block_kwargs(self, index: int) -> dict:
        """What block `index` hands its attention function (padded_attention reads it)."""
        kwargs = {"real_tokens": self.tokens, "source_tokens": self.source_tokens}
        if self.pooled is not None and index == self.num_blocks - 1:
            kwargs["pooled"] = self.pooled
        return {name: value for name, value in kwargs.items() if value is not None}

    def leave(self, hidden_states):
        """The stack's output in the padded layout [B, L, C] (or the pooled tokens' [B, 1, C])."""
        if self.pooled is not None:
            return self.pooled.select(hidden_states) if self.num_blocks == 0 else hidden_states
        return hidden_states if self.tokens is None else self.tokens.scatter(hidden_states)


def pooled_token_mask(config: ScratchformerConfig, input_ids, inputs_embeds, attention_mask, kwargs: dict):
    """The [B, L] mask of real tokens from which a first/last-token pooling (config.classifier_pooling "cls" or
    "last") finds the one token it reads, so the stack's last block computes only that token; None when the pooling
    reads every token (mean, max), or the stack or the caller needs every token (a causal stack, another attention
    backend, a 4-D mask, per-layer states or weights)."""
    if (
        config.classifier_pooling not in ("cls", "last")
        or config.is_decoder
        or config._attn_implementation not in ("sdpa", "eager")
        or (attention_mask is not None and attention_mask.dim() != 2)
        or kwargs.get("output_hidden_states", config.output_hidden_states)
        or kwargs.get("output_attentions", config.output_attentions)
    ):
        return None
    inputs = input_ids if input_ids is not None else inputs_embeds[..., 0]
    return torch.ones_like(inputs, dtype=torch.bool) if attention_mask is None else attention_mask.bool()


def target_padding_mask(labels: torch.Tensor) -> torch.Tensor:
    """An encoder-decoder's decoder attention mask for training on labels, so its blocks skip the target padding too:
    1 up to each row's last labelled token, 0 on the trailing -100 padding. Those positions add nothing to the loss
    and, being last, are never seen by a causal query that does."""
    positions = torch.arange(labels.shape[-1], device=labels.device)
    last = positions.masked_fill(labels == -100, 0).amax(-1, keepdim=True)  # row without labels: keep position 0
    return (positions <= last).long()

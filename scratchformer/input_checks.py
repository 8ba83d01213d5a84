"""The checks a stack makes of its inputs before it runs, each failing with one clear message instead of an opaque
index error or a silently wrong answer (modeling_scratchformer.py calls check_inputs once per forward).

Checks of values run eagerly only: torch.compile and torch.export trace shapes, not values, and a compiled decoding
step (a static cache's length is a tensor) cannot branch on them; the eager prefill has checked the prompt.
"""

import torch

from .configuration_scratchformer import ScratchformerConfig


def check_inputs(model, input_ids, inputs_embeds, attention_mask, position_ids, output_positions, cache,
                 past_length: int, paged: bool) -> None:
    """Refuse what a stack (ScratchformerModel) cannot run: see each check's message."""
    config, tracing = model.config, torch.compiler.is_compiling()
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds")
    if output_positions is not None and (model.is_causal or config._attn_implementation not in ("sdpa", "eager")):
        raise ValueError("output_positions needs a bidirectional stack with the sdpa or eager attention backend "
                         f"(this one: causal={model.is_causal}, {config._attn_implementation!r})")
    if not tracing:
        if input_ids is not None:
            check_token_ids(config, input_ids)
        if model.stack == "encoder":
            check_sources_not_empty(attention_mask)
    check_bigrams(config, cache, past_length, paged, tracing)
    length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
    # Continuous batching's paged cache packs many requests into one row and has no one length: the position_ids
    # it comes with place each token in its own request.
    last_position = int(position_ids.max()) if paged and position_ids is not None and not tracing else 0
    if last_position >= config.max_position_embeddings:
        raise ValueError(f"A request reaches position {last_position}, past max_position_embeddings="
                         f"{config.max_position_embeddings}; shorten its prompt or ask for fewer new tokens")
    if not tracing and not paged and past_length + length > config.max_position_embeddings:
        raise ValueError(f"Input of {length} tokens (after {past_length} cached) is longer than max_position_embeddings="
                         f"{config.max_position_embeddings}; truncate it, e.g. tokenizer(..., truncation=True)")


def check_token_ids(config: ScratchformerConfig, input_ids: torch.Tensor) -> None:
    """Refuse ids outside the vocabulary with a clear message (instead of an opaque index error)."""
    if input_ids.numel() == 0:
        raise ValueError("input_ids is empty: there is no token to run the model on")
    low, high = torch.aminmax(input_ids)
    if low < 0 or high >= config.vocab_size:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(f"input_ids contains token id {bad}, outside the vocabulary [0, {config.vocab_size})")


def check_sources_not_empty(attention_mask: torch.Tensor | None) -> None:
    """Refuse a source with no real token (an all-zero attention_mask row): attention over nothing is undefined."""
    if attention_mask is None:
        return
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"source(s) {empty} of the batch are empty (attention_mask is all zeros): nothing to translate")


def check_bigrams(config: ScratchformerConfig, cache, past_length: int, paged: bool, tracing: bool) -> None:
    """bigram_buckets pairs each token with the one before it, which a cached step does not have."""
    if not config.bigram_buckets:
        return
    if paged:
        raise ValueError("bigram_buckets: continuous batching (generate_batch, a paged cache) packs requests into "
                         "one row and caches their past, so a token has no previous token to pair with; use "
                         "generate(..., use_cache=False) instead")
    if cache is not None and (tracing or past_length):
        raise ValueError("bigram_buckets: a cached step has no previous token to pair with; call with use_cache=False")

"""Scratchformer: the Transformer written out step by step, as a native transformers model.

Read it top to bottom; each idea is one named piece:

    positions    learned / sinusoidal tables, or rotary (RoPE) rotation of queries and keys
    embeddings   token vector + position vector
    attention    Q/K/V projections -> split heads -> scores q.k^T / sqrt(D) -> mask -> softmax -> weighted sum of V
                 -> merge heads -> output projection   (eager here; SDPA/flash through ALL_ATTENTION_FUNCTIONS)
    MLP          position-wise feed-forward network
    block        x = x + attention(norm(x)); x = x + mlp(norm(x))   (pre-norm; post-norm: x = norm(x + f(x)))
    model        embeddings -> blocks -> final norm (one stack; an encoder-decoder has two)
    pooling      one vector per sequence (mean / max / cls / last) for classification
    heads        causal LM, sequence classification, masked LM, encoder-decoder (seq2seq) LM

Tensor shapes in the comments:

    B  batch size            L  tokens per sequence (new ones; a cache adds `past` before them)
    C  hidden size           S  source tokens (an encoder-decoder's encoder output)
    h  attention heads       D  head size, C / h
    V  vocabulary size       N  real tokens of a padded batch, packed [1, N, C] (unpadding.py)

Speed machinery lives beside it, each in a file of its own, attached at lines marked "speed:": unpadding.py (a padded
batch's token-wise layers run on its real tokens only), linear_cross_entropy.py (the fused CPU training loss and the
one place that chooses it), cpu_kernels.py (CPU and torch.compile kernels). Also beside it: ngram.py (the
classifier's NBSVM-style n-gram path and head-and-tail cut), input_checks.py (clear errors for bad inputs),
parallelism.py (transformers' DistributedConfig), integrations.py (PEFT, loading), compat.py (transformers-version
differences). docs/tour.md says where to start.
"""

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (BaseModelOutput, BaseModelOutputWithPast,
                                           BaseModelOutputWithPastAndCrossAttentions, CausalLMOutputWithPast,
                                           MaskedLMOutput, Seq2SeqLMOutput, SequenceClassifierOutput)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .compat import accepts_either_cache_name, cache_field, cache_of, is_paged_cache, update_cache
from .configuration_scratchformer import ScratchformerConfig
from .cpu_kernels import attach_compiled_dropout, loss_in_own_graph
from .input_checks import check_inputs
from .integrations import declare_lora_target_modules, naming_corrupt_weights
from .linear_cross_entropy import output_logits_and_loss
from .ngram import NgramLogits, bigram_ids, fit_ngram_path, head_and_tail, keep_head_and_tail  # noqa: F401 (head_and_tail:
# the demo reads a loaded model's own cut from its module, remote code included)
from .parallelism import adapt_pipeline_stage, check_distributed_config, drop_stack_rules, gather_before_encoding
from .unpadding import (Unpadding, attended_rows, padded_attention, padded_for_cache, pooled_token_mask,
                        target_padding_mask)

# ----------------------------------------------------------------------------------------------------------------
# Positions
# ----------------------------------------------------------------------------------------------------------------


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed position vectors of Vaswani et al.: sin/cos waves whose wavelengths grow geometrically with the dim."""
    positions = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies[: dim // 2])
    return table


class SinusoidalPositionalEmbedding(nn.Module):
    """Looks up the fixed sinusoidal vector of each position (nothing is learned or saved)."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        self.num_positions, self.dim = num_positions, dim
        self.register_buffer("table", sinusoidal_table(num_positions, dim), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]


def rotary_inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """Rotation speed of each pair of dimensions in RoPE: theta^(-2i/D)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


class RotaryPositionalEmbedding(nn.Module):
    """Rotary positions (Su et al., 2021): the cos/sin of the angle each position rotates queries and keys by."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", rotary_inverse_frequencies(head_dim, theta), persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids[..., None].float() * self.inv_freq  # [B, L, D/2]
        angles = torch.cat((angles, angles), dim=-1)  # [B, L, D]: one angle per pair, laid out as two halves
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Turn each pair (x1, x2) of the two halves into (-x2, x1): a 90-degree rotation."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate query or key vectors [B, h, L, D] by their positions' angles (cos, sin: [B, L, D])."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


# ----------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------


class ScratchformerEmbeddings(nn.Module):
    """Token vectors plus (learned or sinusoidal) position vectors, then dropout; rotary positions add nothing here.
    With `config.bigram_buckets`, each token's vector also gets the hashed vector of its (previous token, token) pair.
    """

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        elif config.position_embedding_type == "sinusoidal":
            self.position_embeddings = SinusoidalPositionalEmbedding(config.max_position_embeddings, config.hidden_size)
        else:
            self.position_embeddings = None
        self.bigram_embeddings = nn.Embedding(config.bigram_buckets, config.hidden_size) if config.bigram_buckets else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        embeddings = self.token_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # [B, L, C]
        if self.bigram_embeddings is not None and input_ids is not None:
            embeddings = embeddings + self.bigram_embeddings(bigram_ids(input_ids, self.bigram_embeddings.num_embeddings))
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings(position_ids)  # [B, L, C]
        return self.dropout(embeddings)


# ----------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, L, h*D] -> [B, h, L, D]: each head attends with its own slice of the vector."""
    batch, length, _ = x.shape
    return x.view(batch, length, -1, head_dim).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, L, h, D] -> [B, L, h*D]: concatenate the heads' outputs again."""
    return x.reshape(*x.shape[:2], -1)


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention written out: scores -> mask -> softmax -> dropout -> weighted sum of values.

    The mask holds 0 where a query may look and a huge negative number where it may not: padding, and in a causal
    stack the future. The causal triangle for L = 4 (create_causal_mask builds it, padding added):

                 key 0   key 1   key 2   key 3
        query 0    0     -inf    -inf    -inf
        query 1    0       0     -inf    -inf        after softmax, -inf -> weight 0:
        query 2    0       0       0     -inf        token t sees tokens 0..t only
        query 3    0       0       0       0
    """
    # query: [B, h, L, D]; key, value: [B, h, past + L, D] (or [B, h, S, D] in cross-attention)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # [B, h, L, past + L]: q.k / sqrt(D), so softmax
    # does not saturate as D grows
    if attention_mask is not None:
        scores = scores + attention_mask  # [B, h, L, past + L]: hidden keys -> -inf
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # each row sums to 1
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # [B, h, L, D]: a weighted sum of the values
    return output.transpose(1, 2).contiguous(), weights  # [B, L, h, D], as every attention backend returns


class ScratchformerAttention(nn.Module):
    """Multi-head attention: project to queries, keys and values, attend per head, project the heads back.

    Self-attention takes queries, keys and values from the same tokens. Cross-attention (`is_cross_attention`, in an
    encoder-decoder's decoder) takes the queries from the decoder and the keys and values from the encoder output.
    """

    def __init__(self, config: ScratchformerConfig, layer_idx: int, is_causal: bool | None = None,
                 is_cross_attention: bool = False):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5  # 1 / sqrt(D)
        self.dropout = config.attention_probs_dropout_prob
        self.is_cross_attention = is_cross_attention
        # Read by SDPA when no explicit mask is passed; every decoder token may see every source token.
        self.is_causal = False if is_cross_attention else (config.is_decoder if is_causal is None else is_causal)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, cache: Cache | None = None,
                encoder_hidden_states: torch.Tensor | None = None,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states [B, L, C] -> [B, L, C] (and the attention weights, where the backend returns them)."""
        query = split_heads(self.q_proj(hidden_states), self.head_dim)  # [B, h, L, D]
        if self.is_cross_attention:
            # No rotary here: decoder and source positions live on different axes, their difference means nothing.
            key, value = self.source_keys_values(encoder_hidden_states, cache, kwargs)  # [B, h, S, D]
        else:
            key = split_heads(self.k_proj(hidden_states), self.head_dim)  # [B, h, L, D]
            value = split_heads(self.v_proj(hidden_states), self.head_dim)  # [B, h, L, D]
            if position_embeddings is not None:  # rotary positions: turn each query and key by its position's angle
                query, key = apply_rotary(query, *position_embeddings), apply_rotary(key, *position_embeddings)
            if cache is not None:  # append this step's keys/values to the cache, attend over all of them
                if isinstance(cache, EncoderDecoderCache):
                    cache = cache.self_attention_cache
                key, value = padded_for_cache(self, key, value, kwargs)  # speed: unpadding.py
                key, value = update_cache(cache, key, value, self.layer_idx, kwargs)  # [B, h, past + L, D]

        attention_function: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                             eager_attention_forward)
        attention_function = padded_attention(attention_function)  # speed: unpadding.py
        output, weights = attention_function(
            self, query, key, value, attention_mask, scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0, **kwargs,
        )  # output: [B, L, h, D]
        return self.o_proj(merge_heads(output)), weights  # [B, L, C]

    def source_keys_values(self, encoder_hidden_states: torch.Tensor, cache: Cache | None,
                           kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of the encoder output: computed once per source, then read from the cache."""
        if encoder_hidden_states is None:
            raise ValueError("Cross-attention needs encoder_hidden_states (the encoder's output for the source)")
        cache = cache if isinstance(cache, EncoderDecoderCache) else None
        if cache is not None and cache.is_updated.get(self.layer_idx):  # every decoding step after the first
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            return layer.keys, layer.values
        key = split_heads(self.k_proj(encoder_hidden_states), self.head_dim)  # [B, h, S, D]
        value = split_heads(self.v_proj(encoder_hidden_states), self.head_dim)  # [B, h, S, D]
        if cache is not None:
            key, value = padded_for_cache(self, key, value, kwargs)  # speed: unpadding.py
            key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return key, value


# ----------------------------------------------------------------------------------------------------------------
# Feed-forward, residual + norm, block
# ----------------------------------------------------------------------------------------------------------------


class ScratchformerMLP(nn.Module):
    """Position-wise feed-forward network: widen, non-linearity, narrow back."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc_out = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))  # [B, L, C] -> [B, L, 4C] -> [B, L, C]


class SublayerNorm(nn.Module):
    """The LayerNorm around one sublayer, at the checkpoint name every saved scratchformer has for it
    (`attention_residual.norm`, `mlp_residual.norm`); the block's forward writes the residual out."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class ScratchformerBlock(GradientCheckpointingLayer):
    """One Transformer block: self-attention, (in a decoder of an encoder-decoder) cross-attention, then MLP, each
    inside a residual connection with a LayerNorm.

        pre-norm (GPT-2, Llama)           post-norm (the original Transformer, BERT)
        x = x + attention(norm(x))        x = norm(x + attention(x))
        x = x + mlp(norm(x))              x = norm(x + mlp(x))
    """

    def __init__(self, config: ScratchformerConfig, layer_idx: int, is_causal: bool | None = None,
                 cross_attention: bool = False):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attention = ScratchformerAttention(config, layer_idx, is_causal=is_causal)
        self.attention_residual = SublayerNorm(config)
        if cross_attention:
            self.cross_attention = ScratchformerAttention(config, layer_idx, is_cross_attention=True)
            self.cross_attention_residual = SublayerNorm(config)
        else:
            self.cross_attention = None
        self.mlp = ScratchformerMLP(config)
        self.mlp_residual = SublayerNorm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, cache: Cache | None = None,
                encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        norm_1, norm_2 = self.attention_residual.norm, self.mlp_residual.norm

        def self_attention(h):  # [B, L, C] -> [B, L, C]
            return self.attention(h, attention_mask, position_embeddings, cache, **kwargs)[0]

        def cross_attention(h):  # [B, L, C] -> [B, L, C], reading the source [B, S, C]
            return self.cross_attention(h, encoder_attention_mask, cache=cache,
                                        encoder_hidden_states=encoder_hidden_states, **kwargs)[0]

        # speed: attended_rows(x) is x, or the pooled tokens' rows when the last block computes only those (unpadding.py)
        if self.pre_norm:
            x = attended_rows(x, **kwargs) + self.dropout(self_attention(norm_1(x)))
            if self.cross_attention is not None:
                x = x + self.dropout(cross_attention(self.cross_attention_residual.norm(x)))
            x = x + self.dropout(self.mlp(norm_2(x)))
        else:
            x = norm_1(attended_rows(x, **kwargs) + self.dropout(self_attention(x)))
            if self.cross_attention is not None:
                x = self.cross_attention_residual.norm(x + self.dropout(cross_attention(x)))
            x = norm_2(x + self.dropout(self.mlp(x)))
        return x


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class ScratchformerPreTrainedModel(PreTrainedModel):
    """Shared base: config class, weight initialisation and the transformers feature flags of every head."""

    config_class = ScratchformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ScratchformerBlock"]
    _skip_keys_device_placement = ["cache", "past_key_values"]  # 5.24 passes the cache as `cache`, 5.23 as the other
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": ScratchformerBlock, "attentions": ScratchformerAttention}
    _can_compile_fullgraph = True  # tests/model/test_export.py compiles every head and the decoding step with fullgraph=True

    @classmethod
    def maybe_distribute_model(cls, model, distributed_config, mesh_manager):
        """transformers' DistributedConfig applies the plans; parallelism.py refuses what they would get wrong and
        adapts what they cannot say."""
        check_distributed_config(model, distributed_config)
        model = super().maybe_distribute_model(model, distributed_config, mesh_manager)
        return gather_before_encoding(adapt_pipeline_stage(model))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        return naming_corrupt_weights(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    def post_init(self):
        super().post_init()
        declare_lora_target_modules()  # here, not at import: PEFT is often imported after scratchformer
        attach_compiled_dropout(self)  # speed: cpu_kernels.py

    def _init_weights(self, module):
        super()._init_weights(module)
        # Fixed tables are buffers, not weights: rebuild them (from_pretrained creates modules on the meta device).
        if isinstance(module, SinusoidalPositionalEmbedding):
            init.copy_(module.table, sinusoidal_table(module.num_positions, module.dim))
        elif isinstance(module, RotaryPositionalEmbedding):
            init.copy_(module.inv_freq, rotary_inverse_frequencies(module.head_dim, module.theta))
        elif isinstance(module, NgramLogits):  # starts as no opinion; the ratios come from fit_log_count_ratios
            init.zeros_(module.weight)
            init.zeros_(module.log_count_ratio)
            if module.word_order:
                init.zeros_(module.word_pieces)


STACKS = (None, "encoder", "decoder")


class ScratchformerModel(ScratchformerPreTrainedModel):
    """The bare Transformer: embeddings -> blocks -> final norm, returning one vector per token.

    `stack` says which part of an encoder-decoder this is: None (a model on its own, causal if `config.is_decoder`),
    `"encoder"` (bidirectional, `config.encoder_layers` blocks) or `"decoder"` (causal, `config.decoder_layers`
    blocks with cross-attention to the encoder output).
    """

    def __init__(self, config: ScratchformerConfig, stack: str | None = None):
        super().__init__(config)
        if stack not in STACKS:
            raise ValueError(f"stack must be one of {STACKS}, got {stack!r}")
        self.stack = stack
        self.is_causal = config.is_decoder if stack is None else stack == "decoder"
        num_layers = {None: config.num_hidden_layers, "encoder": config.encoder_layers, "decoder": config.decoder_layers}[stack]
        self.embeddings = ScratchformerEmbeddings(config)
        rotary = config.position_embedding_type == "rotary"
        self.rotary = RotaryPositionalEmbedding(config.head_dim, config.rope_theta) if rotary else None
        self.layers = nn.ModuleList(ScratchformerBlock(config, i, is_causal=self.is_causal,
                                                       cross_attention=stack == "decoder") for i in range(num_layers))
        # Pre-norm leaves the residual stream unnormalised, so it gets one last LayerNorm; post-norm already ends in one.
        pre_norm = config.norm_placement == "pre"
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if pre_norm else nn.Identity()
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.token_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.token_embeddings = value

    @accepts_either_cache_name
    @merge_with_config_defaults
    @capture_outputs
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                output_positions: torch.LongTensor | None = None, **kwargs) -> BaseModelOutputWithPast:
        """`encoder_hidden_states` / `encoder_attention_mask`: the source, for a decoder stack's cross-attention.
        `output_positions` ([B], bidirectional stacks): return only the token at this position of each row,
        last_hidden_state [B, 1, C]; the last block then skips the rest (what first/last-token pooling reads)."""
        if use_cache and cache is None and self.is_causal:  # an encoder sees the whole sequence at once: no cache
            cache = DynamicCache(config=self.config)
            if self.stack == "decoder":  # its own past, and the source's keys/values for cross-attention
                cache = EncoderDecoderCache(cache, DynamicCache(config=self.config))
        paged = is_paged_cache(cache)  # continuous batching: many requests in one row, no one past length
        past_length = cache.get_seq_length() if cache is not None and not paged else 0
        check_inputs(self, input_ids, inputs_embeds, attention_mask, position_ids, output_positions, cache,
                     past_length, paged)
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if position_ids is None:
            device = (input_ids if input_ids is not None else inputs_embeds).device
            position_ids = torch.arange(past_length, past_length + length, device=device).unsqueeze(0)  # [1, L]

        hidden_states = self.embeddings(input_ids, position_ids, inputs_embeds)  # [B, L, C]
        rotary = self.rotary(position_ids, hidden_states.dtype) if self.rotary is not None else None  # 2 x [B, L, D]
        # speed: the batch's real tokens only (unpadding.py). Per-layer hidden states are returned padded, and a
        # trace keeps one layout: these keep the padding.
        unpadding = Unpadding(
            self.config, attention_mask, length, past_length=past_length, num_blocks=len(self.layers),
            output_positions=output_positions, keep_padded=torch.compiler.is_compiling()
            or kwargs.get("output_hidden_states", self.config.output_hidden_states),
            encoder_attention_mask=encoder_attention_mask,
            source_length=0 if encoder_hidden_states is None else encoder_hidden_states.shape[1],
        )
        # A paged cache comes with its mask built (sdpa, eager) or needs none (flash): 5.23's masks cannot read it.
        mask = self._attention_mask(hidden_states, unpadding.padding_mask(attention_mask, self.is_causal),
                                    None if paged else cache, position_ids)  # [B, 1, L, past + L], or None
        cross = {}
        if self.stack == "decoder":
            if encoder_hidden_states is None:
                raise ValueError("A decoder stack needs encoder_hidden_states (the encoder's output for the source)")
            # Which source tokens each target token may attend to: all real ones, no padding.
            cross_mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states,
                                                   attention_mask=encoder_attention_mask,
                                                   encoder_hidden_states=encoder_hidden_states)  # [B, 1, L, S]
            cross = dict(encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=cross_mask)
        hidden_states, rotary, source = unpadding.enter(hidden_states, rotary, encoder_hidden_states)
        if source is not None:
            cross["encoder_hidden_states"] = source

        # Gradient checkpointing replays each block in backward: a cache there would be written twice.
        replayed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.layers):
            hidden_states = block(hidden_states, mask, rotary, None if replayed else cache, **cross, **kwargs,
                                  **unpadding.block_kwargs(i))  # [B, L, C]
        hidden_states = self.final_norm(hidden_states)  # [B, L, C]
        hidden_states = unpadding.leave(hidden_states)
        output_class = BaseModelOutputWithPastAndCrossAttentions if self.stack == "decoder" else BaseModelOutputWithPast
        return output_class(last_hidden_state=hidden_states, **cache_field(cache))

    def _attention_mask(self, hidden_states, attention_mask, cache, position_ids):
        """Padding (+ causal) mask in whatever form the chosen attention backend wants."""
        if self.is_causal:
            if isinstance(cache, EncoderDecoderCache):  # the mask spans the decoder's own past only
                cache = cache.self_attention_cache
            # The cache goes positionally: its keyword is `cache` from transformers 5.24, `past_key_values` before.
            return create_causal_mask(self.config, hidden_states, attention_mask, cache, position_ids)
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)


class ScratchformerDecoder(ScratchformerModel):
    """The decoder stack of an encoder-decoder: causal self-attention, cross-attention to the source, MLP per block."""

    # Self- and cross-attention are the same module class: tell them apart by attribute name.
    _can_record_outputs = {
        "hidden_states": ScratchformerBlock,
        "attentions": OutputRecorder(ScratchformerAttention, index=1, layer_name="attention"),
        "cross_attentions": OutputRecorder(ScratchformerAttention, index=1, layer_name="cross_attention"),
    }
    _tp_plan = {f"layers.*.cross_attention.{name}": "rowwise" if name == "o_proj" else "colwise"
                for name in ("q_proj", "k_proj", "v_proj", "o_proj")}  # the config's plan: self-attention, MLP

    def __init__(self, config: ScratchformerConfig):
        super().__init__(config, stack="decoder")


# ----------------------------------------------------------------------------------------------------------------
# Pooling and heads
# ----------------------------------------------------------------------------------------------------------------


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """[B, L, C] -> [B, C]: one vector per sequence from its real (unpadded) tokens: their mean, max, first (`cls`)
    or last token."""
    if attention_mask is None:
        attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device, dtype=torch.long)
    keep = attention_mask.bool()  # [B, L]
    if how == "mean":
        weights = keep.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
    if how == "max":
        return hidden_states.masked_fill(~keep.unsqueeze(-1), torch.finfo(hidden_states.dtype).min).amax(1)
    index = pooled_positions(keep, how)  # [B]
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), index]


def pooled_positions(keep: torch.Tensor, how: str) -> torch.Tensor:
    """[B] where each row's first (`cls`) or last real token sits in a [B, L] mask of real tokens: works with left
    or right padding alike. A row with no real token reads slot 0, as mean pooling gives such a row zeros: an
    answer, not an index error (a check on the values would break a compiled graph)."""
    length = keep.shape[1]
    positions = torch.arange(length, device=keep.device).expand_as(keep)
    if how == "cls":
        return positions.masked_fill(~keep, length).amin(1) % length
    return positions.masked_fill(~keep, -1).amax(1).clamp(min=0)


class ScratchformerForCausalLM(ScratchformerPreTrainedModel, GenerationMixin):
    """Decoder-only language model (GPT style): causal attention, next-token logits through the tied embeddings."""

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.token_embeddings.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}  # each process: a share of the vocabulary, then gathered
    _fsdp_plan = {"lm_head": "keep_full_weight"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: ScratchformerConfig):
        if not config.is_decoder:  # a language model must not see the tokens it predicts; leave the caller's config alone
            config = copy.deepcopy(config)
            config.is_decoder = True
        super().__init__(config)
        self.model = ScratchformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @accepts_either_cache_name
    @can_return_tuple
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                **kwargs) -> CausalLMOutputWithPast:
        """`labels` are the input ids themselves (shifted inside the loss); -100 marks ignored positions."""
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)  # [B, L, C]
        # logits = lm_head(h) [B, L, V]; loss = loss_function(logits, labels), the labels shifted by one token.
        # speed: on CPU, one fused pass for both in training (linear_cross_entropy.py chooses)
        logits, loss = output_logits_and_loss(self, hidden_states, labels, next_token_labels=True, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **cache_field(cache_of(outputs)),
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class ScratchformerForSequenceClassification(ScratchformerPreTrainedModel):
    """Sequence classifier/regressor: pooled token vectors -> dropout -> linear layer to `num_labels` scores (plus,
    with `config.ngram_buckets`, the n-gram path's scores: ngram.py)."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = ScratchformerModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.ngram_logits = NgramLogits(config) if config.ngram_buckets else None
        self.post_init()

    def fit_ngram_log_count_ratios(self, input_ids: list[list[int]], labels: list[int], smoothing: float = 1.0,
                                   tokenizer=None, kind: str = "one_vs_rest") -> None:
        """Fit the n-gram path's naive-Bayes log-count ratios on training examples (token ids, class ids). With
        word n-grams (config.ngram_word_order), `tokenizer` (the one that made the ids) tells which tokens form words.
        `kind`: how the ratios of more than two labels are formed (NgramLogits.fit_log_count_ratios)."""
        fit_ngram_path(self, input_ids, labels, smoothing, tokenizer, kind)

    @can_return_tuple
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **kwargs) -> SequenceClassifierOutput:
        """`labels`: class ids (single-label), floats (regression, num_labels=1) or multi-hot floats (multi-label)."""
        # The n-gram path reads the whole input; only the Transformer's input is cut to its positions.
        ngram_logits = None
        if self.ngram_logits is not None:
            if input_ids is None:
                raise ValueError("ngram_buckets: the n-gram path reads input_ids; inputs_embeds alone cannot feed it")
            ngram_logits = self.ngram_logits(input_ids, attention_mask)  # [B, num_labels]
        if self.config.classifier_head_tokens is not None and input_ids is not None:
            input_ids, attention_mask = keep_head_and_tail(input_ids, attention_mask,
                                                           self.config.max_position_embeddings,
                                                           self.config.classifier_head_tokens, self.config.pad_token_id)
        # speed: first/last-token pooling has the last block compute only that token, [B, 1, C] (unpadding.py)
        keep = pooled_token_mask(self.config, input_ids, inputs_embeds, attention_mask, kwargs)
        positions = None if keep is None else pooled_positions(keep, self.config.classifier_pooling)  # [B]
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, use_cache=False, output_positions=positions, **kwargs)
        hidden_states = outputs.last_hidden_state  # [B, L, C] ([B, 1, C]: the pooled tokens)
        pooled = pool(hidden_states, attention_mask if positions is None else None, self.config.classifier_pooling)
        logits = self.classifier(self.dropout(pooled))  # [B, num_labels]
        if ngram_logits is not None:
            logits = logits + ngram_logits
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


class ScratchformerMaskedLMHead(nn.Module):
    """BERT's prediction head: dense -> activation -> LayerNorm -> vocabulary logits (decoder tied to embeddings)."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden_states))))  # [.., C] -> [.., V]


class ScratchformerForMaskedLM(ScratchformerPreTrainedModel):
    """Masked language model (BERT style denoising): predict the original token at each masked position."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "model.embeddings.token_embeddings.weight"}
    _tp_plan = {"mlm_head.decoder": "colwise_gather_output"}
    _fsdp_plan = {"mlm_head.decoder": "keep_full_weight"}

    def __init__(self, config: ScratchformerConfig):
        super().__init__(config)
        self.model = ScratchformerModel(config)
        self.mlm_head = ScratchformerMaskedLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **kwargs) -> MaskedLMOutput:
        """`labels`: the original ids at masked positions and -100 everywhere else."""
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, use_cache=False, **kwargs)
        hidden_states = outputs.last_hidden_state  # [B, L, C]
        if labels is not None and self.config.sparse_prediction:
            # Only masked positions carry a loss: skip the vocabulary projection (most of the cost) everywhere else.
            masked = labels != -100
            hidden_states, labels = hidden_states[masked], labels[masked]
        logits = self.mlm_head(hidden_states)  # [B, L, V]
        loss = None
        if labels is not None:
            loss_in_own_graph(logits)  # speed: a compiled graph ends here (cpu_kernels.py)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None) -> torch.Tensor:
    """Decoder inputs from labels (teacher forcing): start token, then the labels minus their last token."""
    if decoder_start_token_id is None:
        raise ValueError("config.decoder_start_token_id is not set: the decoder needs a first token to start from "
                         "(e.g. the tokenizer's bos_token_id)")
    if pad_token_id is None:
        raise ValueError("config.pad_token_id is not set: it replaces the ignored (-100) label positions")
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


class ScratchformerForConditionalGeneration(ScratchformerPreTrainedModel, GenerationMixin):
    """Encoder-decoder (Vaswani et al. 2017, like BART/T5): the encoder reads the source, the decoder writes the
    target one token at a time, attending to its own past and (cross-attention) to the encoder output."""

    # One embedding matrix for source, target and output, as in BART (one tokenizer for both languages).
    _tied_weights_keys = {
        "decoder.embeddings.token_embeddings.weight": "encoder.embeddings.token_embeddings.weight",
        "lm_head.weight": "encoder.embeddings.token_embeddings.weight",
    }
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _fsdp_plan = {"lm_head": "keep_full_weight"}

    def __init__(self, config: ScratchformerConfig):
        if not config.is_encoder_decoder:
            raise ValueError("ScratchformerForConditionalGeneration needs ScratchformerConfig(is_encoder_decoder=True, "
                             "decoder_start_token_id=...)")
        super().__init__(config)
        self.encoder = ScratchformerModel(config, stack="encoder")
        self.decoder = ScratchformerDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Labels are already aligned with the decoder inputs (shift_tokens_right did the shift): plain
        # token-level cross-entropy, not the causal-LM loss that would shift a second time.
        self.loss_type = "ForMaskedLM"
        self.post_init()

    def init_parallel_plans(self):
        super().init_parallel_plans()
        drop_stack_rules(self)  # parallelism.py: the base plans are the two stacks' rules, not this model's

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)
        self.decoder.set_input_embeddings(value)

    def get_encoder(self, modality: str | None = None):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    @accepts_either_cache_name
    @can_return_tuple
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.LongTensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                encoder_outputs: BaseModelOutput | tuple | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, decoder_inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs) -> Seq2SeqLMOutput:
        """`input_ids`: the source; `labels`: the target ids (-100 ignored), from which the decoder inputs are made
        when `decoder_input_ids` is not given; `encoder_outputs`: a source already encoded (reused, not re-run)."""
        if labels is not None:
            use_cache = False  # teacher forcing sees the whole target at once
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
            if decoder_attention_mask is None:  # speed: the decoder skips the target padding (unpadding.py)
                decoder_attention_mask = target_padding_mask(labels)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           inputs_embeds=inputs_embeds, **kwargs)
        elif isinstance(encoder_outputs, (tuple, list)):  # e.g. from return_dict=False
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("Pass labels or decoder_input_ids (or decoder_inputs_embeds): the decoder needs inputs")
        decoder_outputs = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                                       inputs_embeds=decoder_inputs_embeds,
                                       encoder_hidden_states=encoder_outputs.last_hidden_state,
                                       encoder_attention_mask=attention_mask, cache=cache, use_cache=use_cache,
                                       **kwargs)
        hidden_states = slice_logits_to_keep(decoder_outputs.last_hidden_state, logits_to_keep)  # [B, L, C]
        # logits = lm_head(h) [B, L, V]; loss = loss_function(logits, labels), already aligned (shift_tokens_right).
        # speed: on CPU, one fused pass for both in training (linear_cross_entropy.py chooses)
        logits, loss = output_logits_and_loss(self, hidden_states, labels, next_token_labels=False, **kwargs)
        return Seq2SeqLMOutput(loss=loss, logits=logits, **cache_field(cache_of(decoder_outputs)),
                               decoder_hidden_states=decoder_outputs.hidden_states,
                               decoder_attentions=decoder_outputs.attentions,
                               cross_attentions=decoder_outputs.cross_attentions,
                               encoder_last_hidden_state=encoder_outputs.last_hidden_state,
                               encoder_hidden_states=encoder_outputs.hidden_states,
                               encoder_attentions=encoder_outputs.attentions)

    def _reorder_cache(self, cache: EncoderDecoderCache, beam_idx: torch.LongTensor) -> EncoderDecoderCache:
        """Beam search: follow the surviving beams in the decoder's own keys/values. The cross-attention keys/values
        stay put: beams never move between sources, and all beams of one source share the same encoder output."""
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by DataCollatorForSeq2Seq to build decoder inputs once per batch."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)


__all__ = ["ScratchformerPreTrainedModel", "ScratchformerModel", "ScratchformerForCausalLM",
           "ScratchformerForSequenceClassification", "ScratchformerForMaskedLM", "ScratchformerDecoder",
           "ScratchformerForConditionalGeneration", "shift_tokens_right"]

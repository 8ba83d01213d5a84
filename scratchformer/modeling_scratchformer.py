"""Scratchformer: the Transformer written out step by step, as a native transformers model.

Read it top to bottom; each idea is one named piece:

    positions    learned / sinusoidal tables, or rotary (RoPE) rotation of queries and keys
    embeddings   token vector + position vector
    attention    Q/K/V projections -> split heads -> scores q.k^T / sqrt(d) -> mask -> softmax -> weighted sum of V
                 -> merge heads -> output projection   (eager here; SDPA/flash through ALL_ATTENTION_FUNCTIONS)
    MLP          position-wise feed-forward network
    residual     x + sublayer(x), with LayerNorm before (pre-norm) or after (post-norm)
    block        attention (+ cross-attention in a decoder) + MLP, each wrapped in a residual
    model        embeddings -> blocks -> final norm (one stack; an encoder-decoder has two)
    pooling      one vector per sequence (mean / max / cls / last) for classification
    heads        causal LM, sequence classification, masked LM, encoder-decoder (seq2seq) LM

Beside it, each in a file of its own: unpadding.py (a padded batch's token-wise layers run on its real tokens only),
ngram.py (the classifier's NBSVM-style n-gram path and head-and-tail cut), linear_cross_entropy.py (the fused CPU
training loss), parallelism.py (transformers' DistributedConfig), cpu_kernels.py (CPU and torch.compile speed machinery),
compat.py (transformers-version differences).
"""

import copy
import math
import sys
from collections.abc import Callable

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .compat import accepts_either_cache_name, attention_function_writes_cache, cache_field, cache_of, is_paged_cache
from .cpu_kernels import Dropout, loss_in_own_graph, output_layer_logits
from .configuration_scratchformer import ScratchformerConfig
from .linear_cross_entropy import fused_loss_applies, linear_cross_entropy
from .ngram import NgramLogits, bigram_ids, head_and_tail, keep_head_and_tail  # noqa: F401 (head_and_tail: the demo
# reads a loaded model's own cut from its module, remote code included)
from .unpadding import PooledTokens, RealTokens, real_tokens
from .parallelism import adapt_pipeline_stage, check_distributed_config, gather_before_encoding

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
    """Rotation speed of each pair of dimensions in RoPE: theta^(-2i/d)."""
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
    """Rotate query or key vectors [B, H, L, D] by their positions' angles."""
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
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, position_ids=None, inputs_embeds=None) -> torch.Tensor:
        embeddings = self.token_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.bigram_embeddings is not None and input_ids is not None:
            embeddings = embeddings + self.bigram_embeddings(bigram_ids(input_ids, self.bigram_embeddings.num_embeddings))
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(embeddings)


def tracing() -> bool:
    """Whether torch.compile or torch.export is tracing this code (and tensors have no values to branch on)."""
    return torch.compiler.is_compiling()


# ----------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, L, H*D] -> [B, H, L, D]: each head attends with its own slice of the vector."""
    batch, length, _ = x.shape
    return x.view(batch, length, -1, head_dim).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, L, H, D] -> [B, L, H*D]: concatenate the heads' outputs again."""
    return x.reshape(*x.shape[:2], -1)


def attention_scores(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """How much each query matches each key: q.k^T scaled by 1/sqrt(head_dim) so softmax does not saturate."""
    return torch.matmul(query, key.transpose(-1, -2)) * scaling


def mask_scores(scores: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Hide padding and (causal) future keys: the mask holds 0 where allowed and a huge negative number elsewhere."""
    return scores if attention_mask is None else scores + attention_mask


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention written out: scores -> mask -> softmax -> dropout -> weighted sum of values."""
    scores = mask_scores(attention_scores(query, key, scaling), attention_mask)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # [B, H, L, D]
    return output.transpose(1, 2).contiguous(), weights  # [B, L, H, D], as every attention backend returns


class ScratchformerAttention(nn.Module):
    """Multi-head attention: project to queries, keys and values, attend per head, project the heads back.

    Self-attention takes queries, keys and values from the same tokens. Cross-attention (`is_cross_attention`, in an
    encoder-decoder's decoder) takes the queries from the decoder and the keys and values from the encoder output.
    Queries, keys and values have a projection each (`q_proj`, `k_proj`, `v_proj`, as in Llama and BERT): tensor
    parallelism splits each by heads and FSDP shards each on its own.
    """

    def __init__(
        self, config: ScratchformerConfig, layer_idx: int, is_causal: bool | None = None, is_cross_attention: bool = False
    ):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.is_cross_attention = is_cross_attention
        # Read by SDPA when no explicit mask is passed; every decoder token may see every source token.
        self.is_causal = False if is_cross_attention else (config.is_decoder if is_causal is None else is_causal)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def project(self, projection: nn.Linear, x: torch.Tensor, tokens: RealTokens | None = None) -> torch.Tensor:
        """One projection of x, split into heads: [B, L, H*D] -> [B, H, L, D]. Given `tokens`, x holds only these
        real tokens of a padded batch, and the projection goes back to their padded places for attention."""
        projected = projection(x)
        if tokens is not None:
            projected = tokens.scatter(projected)
        return split_heads(projected, self.head_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        tokens: RealTokens | None = None,
        source_tokens: RealTokens | None = None,
        pooled: PooledTokens | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`tokens`: hidden_states holds only these real tokens of a padded batch; `source_tokens`: the same for
        encoder_hidden_states (cross-attention); `pooled`: attend from these tokens only (output [B, 1, H])."""
        if self.is_cross_attention:
            query = self.project(self.q_proj, hidden_states, tokens)
            # No rotary here: decoder and source positions live on different axes, their difference means nothing.
            key, value = self.source_keys_values(encoder_hidden_states, cache, source_tokens)
        else:
            query = self.project(self.q_proj, hidden_states, tokens)
            key = self.project(self.k_proj, hidden_states, tokens)
            value = self.project(self.v_proj, hidden_states, tokens)
            if position_embeddings is not None:  # rotary positions
                cos, sin = position_embeddings
                query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
            if cache is not None:  # append this step's keys/values to the cache, attend over all of them
                if isinstance(cache, EncoderDecoderCache):
                    cache = cache.self_attention_cache
                if attention_function_writes_cache(cache):  # a paged cache under 5.23: its attention functions write it
                    kwargs["cache"] = cache
                else:  # kwargs reach the cache: a paged cache (continuous batching) reads its write indices there.
                    key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
        if pooled is not None:  # keys and values of every token, queries of the pooled ones
            query, attention_mask = pooled.queries(query), pooled.mask_rows(attention_mask)

        attention_function: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_function(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        output = merge_heads(output)
        if tokens is not None and pooled is None:
            output = tokens.select(output)
        return self.o_proj(output), weights

    def source_keys_values(
        self, encoder_hidden_states: torch.Tensor, cache: Cache | None, source_tokens: RealTokens | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of the encoder output: computed once per source, then read from the cache."""
        if encoder_hidden_states is None:
            raise ValueError("Cross-attention needs encoder_hidden_states (the encoder's output for the source)")
        cache = cache if isinstance(cache, EncoderDecoderCache) else None
        if cache is not None and cache.is_updated.get(self.layer_idx):  # every decoding step after the first
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            return layer.keys, layer.values
        key = self.project(self.k_proj, encoder_hidden_states, source_tokens)
        value = self.project(self.v_proj, encoder_hidden_states, source_tokens)
        if cache is not None:
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
        return self.fc_out(self.act(self.fc_in(x)))


class ResidualNorm(nn.Module):
    """Residual connection with LayerNorm: pre-norm x + f(LN(x)), or post-norm LN(x + f(x)) as in the original paper."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def sublayer_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the sublayer reads: the normalised stream (pre-norm) or the stream itself (post-norm)."""
        return self.norm(x) if self.pre_norm else x

    def add(self, x: torch.Tensor, sublayer_output: torch.Tensor) -> torch.Tensor:
        """Add the sublayer's output back onto the residual stream."""
        x = x + self.dropout(sublayer_output)
        return x if self.pre_norm else self.norm(x)


class ScratchformerBlock(GradientCheckpointingLayer):
    """One Transformer block: self-attention, (in a decoder of an encoder-decoder) cross-attention, then MLP,
    each inside a residual connection."""

    def __init__(
        self, config: ScratchformerConfig, layer_idx: int, is_causal: bool | None = None, cross_attention: bool = False
    ):
        super().__init__()
        self.attention = ScratchformerAttention(config, layer_idx, is_causal=is_causal)
        self.attention_residual = ResidualNorm(config)
        if cross_attention:
            self.cross_attention = ScratchformerAttention(config, layer_idx, is_cross_attention=True)
            self.cross_attention_residual = ResidualNorm(config)
        else:
            self.cross_attention = None
        self.mlp = ScratchformerMLP(config)
        self.mlp_residual = ResidualNorm(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        pooled: PooledTokens | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """`pooled`: compute only these tokens' outputs ([B, 1, H]), from keys and values of all tokens."""
        attended, _ = self.attention(
            self.attention_residual.sublayer_input(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            pooled=pooled,
            **kwargs,
        )
        if pooled is not None:
            hidden_states = pooled.select(hidden_states)
        hidden_states = self.attention_residual.add(hidden_states, attended)
        if self.cross_attention is not None:
            attended, _ = self.cross_attention(
                self.cross_attention_residual.sublayer_input(hidden_states),
                attention_mask=encoder_attention_mask,
                cache=cache,
                encoder_hidden_states=encoder_hidden_states,
                **kwargs,
            )
            hidden_states = self.cross_attention_residual.add(hidden_states, attended)
        return self.mlp_residual.add(hidden_states, self.mlp(self.mlp_residual.sublayer_input(hidden_states)))


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


# What LoRA adapts when a user names no target_modules: the query and value projections, PEFT's default for Llama.
LORA_TARGET_MODULES = ["q_proj", "v_proj"]


def declare_lora_target_modules() -> None:
    """Enter this model type in PEFT's table of default LoRA targets (PEFT keys it by model_type), if PEFT is
    loaded; importing PEFT just for this would cost every user two seconds."""
    constants = sys.modules.get("peft.utils.constants")
    if constants is not None:
        constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.setdefault("scratchformer", LORA_TARGET_MODULES)


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
    _can_compile_fullgraph = True  # tests/test_export.py compiles every head and the decoding step with fullgraph=True

    @classmethod
    def maybe_distribute_model(cls, model, distributed_config, mesh_manager):
        """transformers' DistributedConfig applies the plans; parallelism.py refuses what they would get wrong and
        adapts what they cannot say."""
        check_distributed_config(model, distributed_config)
        model = super().maybe_distribute_model(model, distributed_config, mesh_manager)
        return gather_before_encoding(adapt_pipeline_stage(model))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained, with a corrupt or truncated weights file reported as such."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"The weights file (model.safetensors) of {pretrained_model_name_or_path} is corrupt or truncated "
                f"({error}); save or download it again."
            ) from error

    def post_init(self):
        super().post_init()
        declare_lora_target_modules()  # here, not at import: PEFT is often imported after scratchformer

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
        self.rotary = (
            RotaryPositionalEmbedding(config.head_dim, config.rope_theta)
            if config.position_embedding_type == "rotary"
            else None
        )
        self.layers = nn.ModuleList(
            ScratchformerBlock(config, i, is_causal=self.is_causal, cross_attention=stack == "decoder")
            for i in range(num_layers)
        )
        # Pre-norm leaves the residual stream unnormalised, so it gets one last LayerNorm; post-norm already ends in one.
        self.final_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            if config.norm_placement == "pre"
            else nn.Identity()
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.token_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.token_embeddings = value

    @accepts_either_cache_name
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        output_positions: torch.LongTensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """`encoder_hidden_states` / `encoder_attention_mask`: the source, for a decoder stack's cross-attention.
        `output_positions` ([B], bidirectional stacks): return only the token at this position of each row,
        last_hidden_state [B, 1, H]; the last block then skips the rest (what first/last-token pooling reads)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if output_positions is not None and (self.is_causal or self.config._attn_implementation not in ("sdpa", "eager")):
            raise ValueError("output_positions needs a bidirectional stack with the sdpa or eager attention backend "
                             f"(this one: causal={self.is_causal}, {self.config._attn_implementation!r})")
        if not tracing():  # checks of values: eager only (export and compile trace shapes, not values)
            if input_ids is not None:
                self._check_token_ids(input_ids)
            if self.stack == "encoder":
                check_sources_not_empty(attention_mask)
        if not self.is_causal:
            use_cache = False  # an encoder sees the whole sequence at once: nothing to cache
        if use_cache and cache is None:
            cache = (
                EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
                if self.stack == "decoder"
                else DynamicCache(config=self.config)
            )

        # A static cache's length is a tensor: a compiled decoding step cannot branch on it, so the checks below run
        # eagerly only (transformers compiles decoding steps; the eager prefill has checked the prompt).
        # Continuous batching's paged cache packs many requests into one row and has no one length: the position_ids
        # it comes with place each token in its own request.
        paged = is_paged_cache(cache)
        past_length = cache.get_seq_length() if cache is not None and not paged else 0
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if self.config.bigram_buckets and paged:
            raise ValueError("bigram_buckets: continuous batching (generate_batch, a paged cache) packs requests into "
                             "one row and caches their past, so a token has no previous token to pair with; use "
                             "generate(..., use_cache=False) instead")
        if self.config.bigram_buckets and cache is not None and (tracing() or past_length):
            raise ValueError("bigram_buckets: a cached step has no previous token to pair with; call with use_cache=False")
        last_position = int(position_ids.max()) if paged and position_ids is not None and not tracing() else 0
        if last_position >= self.config.max_position_embeddings:
            raise ValueError(
                f"A request reaches position {last_position}, past max_position_embeddings="
                f"{self.config.max_position_embeddings}; shorten its prompt or ask for fewer new tokens"
            )
        if not tracing() and past_length + length > self.config.max_position_embeddings and not paged:
            raise ValueError(
                f"Input of {length} tokens (after {past_length} cached) is longer than max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate it, e.g. tokenizer(..., truncation=True)"
            )
        if position_ids is None:
            device = (input_ids if input_ids is not None else inputs_embeds).device
            position_ids = torch.arange(past_length, past_length + length, device=device).unsqueeze(0)

        hidden_states = self.embeddings(input_ids, position_ids, inputs_embeds)
        rotary = self.rotary(position_ids, hidden_states.dtype) if self.rotary is not None else None
        # Per-layer hidden states are returned padded, so asking for them keeps the whole batch padded.
        keep_padded = tracing() or past_length > 0 or kwargs.get("output_hidden_states", self.config.output_hidden_states)
        tokens = None if keep_padded else real_tokens(self.config, attention_mask, length)
        # The padding's outputs are dropped, and a real token's causal view of a right-padded row holds no padding:
        # the causal mask alone will do (SDPA then runs its faster is_causal kernel).
        padding_mask = None if tokens is not None and self.is_causal and tokens.right_padded else attention_mask
        # A paged cache comes with its mask built (sdpa, eager) or needs none (flash): 5.23's masks cannot read it.
        mask = self._attention_mask(hidden_states, padding_mask, None if paged else cache, position_ids)
        cross = {}
        if self.stack == "decoder":
            if encoder_hidden_states is None:
                raise ValueError("A decoder stack needs encoder_hidden_states (the encoder's output for the source)")
            # Which source tokens each target token may attend to: all real ones, no padding.
            cross_mask = create_bidirectional_mask(
                config=self.config,
                inputs_embeds=hidden_states,
                attention_mask=encoder_attention_mask,
                encoder_hidden_states=encoder_hidden_states,
            )
            # Cross-attention keys/values are made once, on the first step; of the real source tokens only.
            source_tokens = None if past_length else real_tokens(
                self.config, encoder_attention_mask, encoder_hidden_states.shape[1]
            )
            if source_tokens is not None:
                encoder_hidden_states = source_tokens.select(encoder_hidden_states)
            cross = dict(
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=cross_mask,
                source_tokens=source_tokens,
            )
        if tokens is not None:
            hidden_states = tokens.select(hidden_states)

        # Gradient checkpointing replays each block in backward: a cache there would be written twice.
        replayed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        pooled = None if output_positions is None else PooledTokens(output_positions, length, tokens)
        for i, block in enumerate(self.layers):
            hidden_states = block(
                hidden_states,
                attention_mask=mask,
                position_embeddings=rotary,
                cache=None if replayed else cache,
                tokens=tokens,
                pooled=pooled if i == len(self.layers) - 1 else None,
                **cross,
                **kwargs,
            )
        if pooled is not None and not self.layers:
            hidden_states = pooled.select(hidden_states)
        hidden_states = self.final_norm(hidden_states)
        if tokens is not None and pooled is None:
            hidden_states = tokens.scatter(hidden_states)
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

    def _check_token_ids(self, input_ids: torch.Tensor) -> None:
        """Refuse ids outside the vocabulary with a clear message (instead of an opaque index error)."""
        if input_ids.numel() == 0:
            raise ValueError("input_ids is empty: there is no token to run the model on")
        low, high = torch.aminmax(input_ids)
        if low < 0 or high >= self.config.vocab_size:
            bad = int(low) if low < 0 else int(high)
            raise ValueError(f"input_ids contains token id {bad}, outside the vocabulary [0, {self.config.vocab_size})")


def check_sources_not_empty(attention_mask: torch.Tensor | None) -> None:
    """Refuse a source with no real token (an all-zero attention_mask row): attention over nothing is undefined."""
    if attention_mask is None:
        return
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"source(s) {empty} of the batch are empty (attention_mask is all zeros): nothing to translate")


class ScratchformerDecoder(ScratchformerModel):
    """The decoder stack of an encoder-decoder: causal self-attention, cross-attention to the source, MLP per block."""

    # Self- and cross-attention are the same module class: tell them apart by attribute name.
    _can_record_outputs = {
        "hidden_states": ScratchformerBlock,
        "attentions": OutputRecorder(ScratchformerAttention, index=1, layer_name="attention"),
        "cross_attentions": OutputRecorder(ScratchformerAttention, index=1, layer_name="cross_attention"),
    }
    _tp_plan = {  # the config's base plan covers self-attention and the MLP
        "layers.*.cross_attention.q_proj": "colwise",
        "layers.*.cross_attention.k_proj": "colwise",
        "layers.*.cross_attention.v_proj": "colwise",
        "layers.*.cross_attention.o_proj": "rowwise",
    }

    def __init__(self, config: ScratchformerConfig):
        super().__init__(config, stack="decoder")


# ----------------------------------------------------------------------------------------------------------------
# Pooling and heads
# ----------------------------------------------------------------------------------------------------------------


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """One vector per sequence from its real (unpadded) tokens: their mean, max, first (`cls`) or last token."""
    if attention_mask is None:
        attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device, dtype=torch.long)
    keep = attention_mask.bool()
    if how == "mean":
        weights = keep.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
    if how == "max":
        return hidden_states.masked_fill(~keep.unsqueeze(-1), torch.finfo(hidden_states.dtype).min).amax(1)
    index = pooled_positions(keep, how)
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


def vocabulary_logits_and_loss(
    model: PreTrainedModel, hidden_states: torch.Tensor, labels: torch.Tensor | None, next_token_labels: bool, **kwargs
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits over the vocabulary (`model.lm_head`) and, given labels, their cross-entropy (`model.loss_function`).
    Training on CPU computes both in one fused pass (linear_cross_entropy.py): the same values, 1.4-1.8x faster.
    `next_token_labels`: the labels are the inputs themselves, so position t is scored on label t + 1."""
    if labels is not None and labels.shape == hidden_states.shape[:-1] and fused_loss_applies(model.lm_head, hidden_states):
        ignore_index = kwargs.get("ignore_index", -100)
        targets = kwargs.get("shift_labels") if next_token_labels else labels  # as transformers' ForCausalLMLoss
        if targets is None:  # tokens < n predict n, the last predicts nothing
            targets = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        loss, logits = linear_cross_entropy(
            hidden_states, model.lm_head, targets, ignore_index, kwargs.get("num_items_in_batch")
        )
        return logits, loss
    logits = output_layer_logits(model.lm_head, hidden_states)
    loss = None
    if labels is not None:
        loss_in_own_graph(logits)
        loss = model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size, **kwargs)
    return logits, loss


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
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`labels` are the input ids themselves (shifted inside the loss); -100 marks ignored positions."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits, loss = vocabulary_logits_and_loss(self, hidden_states, labels, next_token_labels=True, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **cache_field(cache_of(outputs)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class ScratchformerForSequenceClassification(ScratchformerPreTrainedModel):
    """Sequence classifier/regressor: pooled token vectors -> dropout -> linear layer to `num_labels` scores."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = ScratchformerModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.ngram_logits = NgramLogits(config) if config.ngram_buckets else None
        self.post_init()

    def fit_ngram_log_count_ratios(
        self, input_ids: list[list[int]], labels: list[int], smoothing: float = 1.0, tokenizer=None,
        kind: str = "one_vs_rest",
    ) -> None:
        """Fit the n-gram path's naive-Bayes log-count ratios on training examples (token ids, class ids). With
        word n-grams (config.ngram_word_order), `tokenizer` (the one that made the ids) tells which tokens form words.
        `kind`: how the ratios of more than two labels are formed (NgramLogits.fit_log_count_ratios)."""
        if self.ngram_logits is None:
            raise ValueError("fit_ngram_log_count_ratios: this model has no n-gram path (config.ngram_buckets is 0)")
        if self.num_labels < 2 or self.config.problem_type in ("regression", "multi_label_classification"):
            raise ValueError("fit_ngram_log_count_ratios: naive-Bayes ratios need single-label classification with 2 or "
                             f"more labels (num_labels={self.num_labels}, problem_type={self.config.problem_type!r})")
        if len(input_ids) != len(labels) or not all(0 <= label < self.num_labels for label in labels):
            raise ValueError(f"fit_ngram_log_count_ratios: needs one class id in [0, {self.num_labels}) per example")
        if self.config.ngram_word_order:
            if tokenizer is None:
                raise ValueError("fit_ngram_log_count_ratios: config.ngram_word_order adds word n-grams; pass the "
                                 "tokenizer=... that made input_ids, so the model can tell which tokens form words")
            self.ngram_logits.set_word_pieces(tokenizer)
        self.ngram_logits.fit_log_count_ratios(input_ids, labels, smoothing, kind)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """`labels`: class ids (single-label), floats (regression, num_labels=1) or multi-hot floats (multi-label)."""
        # The n-gram path reads the whole input; only the Transformer's input is cut to its positions.
        ngram_logits = None
        if self.ngram_logits is not None:
            if input_ids is None:
                raise ValueError("ngram_buckets: the n-gram path reads input_ids; inputs_embeds alone cannot feed it")
            ngram_logits = self.ngram_logits(input_ids, attention_mask)
        if self.config.classifier_head_tokens is not None and input_ids is not None:
            input_ids, attention_mask = keep_head_and_tail(
                input_ids, attention_mask, self.config.max_position_embeddings, self.config.classifier_head_tokens,
                self.config.pad_token_id,
            )
        output_positions = self._pooled_positions(input_ids, inputs_embeds, attention_mask, kwargs)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_positions=output_positions,
            **kwargs,
        )
        if output_positions is not None:
            pooled = outputs.last_hidden_state[:, 0]
        else:
            pooled = pool(outputs.last_hidden_state, attention_mask, self.config.classifier_pooling)
        logits = self.classifier(self.dropout(pooled))
        if ngram_logits is not None:
            logits = logits + ngram_logits
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config, **kwargs)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _pooled_positions(self, input_ids, inputs_embeds, attention_mask, kwargs) -> torch.Tensor | None:
        """Where the first/last-token pooling reads each row, so the encoder's last block computes only there; None
        when the pooling reads every token (mean, max), or the caller wants every token's states or weights."""
        config = self.config
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
        keep = torch.ones_like(inputs, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return pooled_positions(keep, config.classifier_pooling)


class ScratchformerMaskedLMHead(nn.Module):
    """BERT's prediction head: dense -> activation -> LayerNorm -> vocabulary logits (decoder tied to embeddings)."""

    def __init__(self, config: ScratchformerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden_states))))


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
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """`labels`: the original ids at masked positions and -100 everywhere else."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and self.config.sparse_prediction:
            # Only masked positions carry a loss: skip the vocabulary projection (most of the cost) everywhere else.
            masked = labels != -100
            hidden_states, labels = hidden_states[masked], labels[masked]
        logits = self.mlm_head(hidden_states)
        loss = None
        if labels is not None:
            loss_in_own_graph(logits)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int | None) -> torch.Tensor:
    """Decoder inputs from labels (teacher forcing): start token, then the labels minus their last token."""
    if decoder_start_token_id is None:
        raise ValueError(
            "config.decoder_start_token_id is not set: the decoder needs a first token to start from "
            "(e.g. the tokenizer's bos_token_id)"
        )
    if pad_token_id is None:
        raise ValueError("config.pad_token_id is not set: it replaces the ignored (-100) label positions")
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


def target_padding_mask(labels: torch.Tensor) -> torch.Tensor:
    """Decoder attention mask for training on labels: 1 up to each row's last labelled token, 0 on the trailing -100
    padding. Those positions add nothing to the loss and, being last, are never seen by a causal query that does."""
    positions = torch.arange(labels.shape[-1], device=labels.device)
    last = positions.masked_fill(labels == -100, 0).amax(-1, keepdim=True)  # row without labels: keep position 0
    return (positions <= last).long()


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
            raise ValueError(
                "ScratchformerForConditionalGeneration needs ScratchformerConfig(is_encoder_decoder=True, "
                "decoder_start_token_id=...)"
            )
        super().__init__(config)
        self.encoder = ScratchformerModel(config, stack="encoder")
        self.decoder = ScratchformerDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Labels are already aligned with the decoder inputs (shift_tokens_right did the shift): plain
        # token-level cross-entropy, not the causal-LM loss that would shift a second time.
        self.loss_type = "ForMaskedLM"
        self.post_init()

    def init_parallel_plans(self):
        """The config's base plans are the stacks' (they arrive here prefixed `encoder.` and `decoder.`); this model
        is no stack itself, so they are no rules of its own."""
        super().init_parallel_plans()
        for plan, stack_plan in ((self._tp_plan, self.config.base_model_tp_plan),
                                 (self._fsdp_plan, self.config.base_model_fsdp_plan),
                                 (self._pp_plan, self.config.base_model_pp_plan)):
            for rule in stack_plan:
                plan.pop(rule, None)

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
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """`input_ids`: the source; `labels`: the target ids (-100 ignored), from which the decoder inputs are made
        when `decoder_input_ids` is not given; `encoder_outputs`: a source already encoded (reused, not re-run)."""
        if labels is not None:
            use_cache = False  # teacher forcing sees the whole target at once
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
            if decoder_attention_mask is None:  # lets the decoder skip the target padding (config.unpad_inputs)
                decoder_attention_mask = target_padding_mask(labels)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        elif isinstance(encoder_outputs, (tuple, list)):  # e.g. from return_dict=False
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("Pass labels or decoder_input_ids (or decoder_inputs_embeds): the decoder needs inputs")
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            inputs_embeds=decoder_inputs_embeds,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(decoder_outputs.last_hidden_state, logits_to_keep)
        logits, loss = vocabulary_logits_and_loss(self, hidden_states, labels, next_token_labels=False, **kwargs)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **cache_field(cache_of(decoder_outputs)),
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )

    def _reorder_cache(self, cache: EncoderDecoderCache, beam_idx: torch.LongTensor) -> EncoderDecoderCache:
        """Beam search: follow the surviving beams in the decoder's own keys/values. The cross-attention keys/values
        stay put: beams never move between sources, and all beams of one source share the same encoder output."""
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by DataCollatorForSeq2Seq to build decoder inputs once per batch."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)


__all__ = [
    "ScratchformerPreTrainedModel",
    "ScratchformerModel",
    "ScratchformerForCausalLM",
    "ScratchformerForSequenceClassification",
    "ScratchformerForMaskedLM",
    "ScratchformerDecoder",
    "ScratchformerForConditionalGeneration",
    "shift_tokens_right",
]

"""The benchmarked models at identical sizes: ours next to transformers' GPT-2, BERT and BART (one place for them).

    Size, SIZES, QUICK_SIZES, GPU_SIZES   dimensions and workloads of bench.speed, bench.speed_gpu, bench.serve_load
                                          and bench.lm_compiled_vs_eager (QUICK_SIZES: --quick's tiny twins)
    scratchformer_config(size, task)      ours at a size: post-norm + first-token pooling for classification (like
                                          BERT), pre-norm decoder for LM (like GPT-2)
    gpt2_config / bert_config / bart_config (config)
                                          transformers' model at the dimensions, dropout and special ids of one of
                                          our configs (bench.accuracy.lm_budget and bench.translate pass a recipe
                                          preset's config)
    build_model(side, task, size)         "ours" or "theirs" for "cls" or "lm", fp32, SDPA attention, seeded
    build_seq2seq(side, config)           ours or BART at a config's dimensions, seeded
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

from scratchformer import (
    ScratchformerConfig,
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForSequenceClassification,
)

DROPOUT = 0.1  # embeddings, sublayer outputs and (unless --attention-dropout) attention weights
NUM_LABELS = 2
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SIDES = ("ours", "theirs", "theirs")  # a paired comparison's models: the third is theirs again, for the noise floor


@dataclass(frozen=True)
class Size:
    """Dimensions of one benchmarked model pair and its workloads."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    seq_len: int  # training sequence length, also max_position_embeddings
    batch_size: int  # training batch
    prompt_len: int  # decoding prompt
    new_tokens: int  # decoding max_new_tokens = min_new_tokens


SIZES = {
    # The cpu-small preset of training/ (hidden 128, 2 layers, 4 heads, MLP 512, vocab 16000, 256 tokens).
    "small": Size(16000, 128, 2, 4, 512, 256, 16, prompt_len=32, new_tokens=64),
    "large": Size(16000, 256, 4, 4, 1024, 256, 8, prompt_len=32, new_tokens=64),
}
QUICK_SIZES = {  # --quick: same keys and code paths, tiny models
    "small": Size(500, 32, 1, 2, 64, 32, 4, prompt_len=8, new_tokens=4),
    "large": Size(500, 64, 2, 4, 128, 32, 4, prompt_len=8, new_tokens=4),
}
GPU_SIZES = {  # bench.speed_gpu
    "large": SIZES["large"],
    # training/lm.py's "gpu" preset: vocab 16000, hidden 512, 6 layers, 8 heads, MLP 2048, 512-token blocks, batch 64.
    "gpu": Size(16000, 512, 6, 8, 2048, 512, 64, prompt_len=32, new_tokens=64),
}


# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------


def scratchformer_config(size: Size, task: str, attention_dropout: float = DROPOUT) -> ScratchformerConfig:
    """Ours: post-norm + first-token pooling for classification (like BERT), pre-norm decoder for LM (like GPT-2)."""
    return ScratchformerConfig(
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=size.seq_len,
        position_embedding_type="learned",
        hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=attention_dropout,
        norm_placement="post" if task == "cls" else "pre",
        classifier_pooling="cls",
        tie_word_embeddings=True,
        num_labels=NUM_LABELS,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )


def gpt2_config(config: ScratchformerConfig) -> GPT2Config:
    """GPT-2 at the dimensions, dropout and special ids of our config, tied embeddings; exact GELU instead of GPT-2's
    default tanh approximation, as ours uses."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_embd=config.hidden_size,
        n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        n_inner=config.intermediate_size,
        n_positions=config.max_position_embeddings,
        activation_function="gelu",
        resid_pdrop=config.hidden_dropout_prob,
        embd_pdrop=config.hidden_dropout_prob,
        attn_pdrop=config.attention_probs_dropout_prob,
        tie_word_embeddings=True,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )


def bert_config(config: ScratchformerConfig) -> BertConfig:
    """BERT at the dimensions, dropout and labels of our config (its token-type embeddings, embedding LayerNorm and
    pooler stay: they are its design)."""
    return BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=config.max_position_embeddings,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        num_labels=config.num_labels,
        pad_token_id=config.pad_token_id,
    )


def bart_config(config: ScratchformerConfig) -> BartConfig:
    """BART at the dimensions of our encoder-decoder config: gelu, no dropout, tied embeddings (BART keeps its own
    design: post-norm with an embedding LayerNorm and a final-logits bias)."""
    return BartConfig(
        vocab_size=config.vocab_size, d_model=config.hidden_size, encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers, encoder_attention_heads=config.num_attention_heads,
        decoder_attention_heads=config.num_attention_heads, encoder_ffn_dim=config.intermediate_size,
        decoder_ffn_dim=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
        activation_function="gelu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        scale_embedding=False, tie_word_embeddings=True, pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=None,
    )


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def build_model(
    side: str, task: str, size: Size, seed: int = 0, attention_dropout: float = DROPOUT
) -> torch.nn.Module:
    """`side` is "ours" or "theirs"; `task` is "cls" or "lm". fp32, SDPA attention, identically seeded."""
    torch.manual_seed(seed)
    config = scratchformer_config(size, task, attention_dropout)
    if side == "ours":
        cls = ScratchformerForSequenceClassification if task == "cls" else ScratchformerForCausalLM
    elif task == "cls":
        cls, config = BertForSequenceClassification, bert_config(config)
    else:
        cls, config = GPT2LMHeadModel, gpt2_config(config)
    config._attn_implementation = "sdpa"
    model = cls(config).float()
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"{cls.__name__} did not take the sdpa attention backend")
    if task == "lm":  # generation: exactly new_tokens tokens, no early stop
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = PAD_ID
    return model


def build_seq2seq(side: str, config: ScratchformerConfig, seed: int = 0) -> torch.nn.Module:
    """Ours (ScratchformerForConditionalGeneration of `config`) or BART at its dimensions, identically seeded."""
    torch.manual_seed(seed)
    if side == "ours":
        return ScratchformerForConditionalGeneration(config)
    return BartForConditionalGeneration(bart_config(config)).to(torch.float32)


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights once)."""
    return sum(p.numel() for p in model.parameters())

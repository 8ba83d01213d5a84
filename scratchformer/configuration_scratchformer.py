"""ScratchformerConfig: every size and switch of the model, validated when it is built."""

from transformers import PreTrainedConfig

POSITION_EMBEDDING_TYPES = ("learned", "sinusoidal", "rotary")
NORM_PLACEMENTS = ("pre", "post")
CLASSIFIER_POOLINGS = ("mean", "max", "cls", "last")

# Saved next to the weights so every Auto class can load the folder with trust_remote_code=True,
# whichever head wrote it (transformers alone would record only the saving class).
AUTO_MAP = {
    "AutoConfig": "configuration_scratchformer.ScratchformerConfig",
    "AutoModel": "modeling_scratchformer.ScratchformerModel",
    "AutoModelForCausalLM": "modeling_scratchformer.ScratchformerForCausalLM",
    "AutoModelForSequenceClassification": "modeling_scratchformer.ScratchformerForSequenceClassification",
    "AutoModelForMaskedLM": "modeling_scratchformer.ScratchformerForMaskedLM",
    "AutoModelForSeq2SeqLM": "modeling_scratchformer.ScratchformerForConditionalGeneration",
}


class ScratchformerConfig(PreTrainedConfig):
    r"""Configuration of a Scratchformer model.

    Args:
        vocab_size: number of token ids.
        hidden_size: width of every token vector (d_model).
        num_hidden_layers: number of Transformer blocks.
        num_attention_heads: heads per attention layer; must divide `hidden_size`.
        intermediate_size: width of the feed-forward layer inside each block.
        hidden_act: feed-forward activation, any name in `transformers.activations.ACT2FN`.
        max_position_embeddings: longest sequence (prompt + generated tokens) the model accepts.
        position_embedding_type: `"learned"` (GPT-2/BERT), `"sinusoidal"` (Vaswani et al.) or `"rotary"` (RoPE).
        rope_theta: base of the rotary frequencies.
        hidden_dropout_prob: dropout on embeddings and on each sublayer output.
        attention_probs_dropout_prob: dropout on the attention weights.
        classifier_dropout: dropout before the classification layer (defaults to `hidden_dropout_prob`).
        layer_norm_eps: epsilon of every LayerNorm.
        norm_placement: `"pre"` (LayerNorm before each sublayer, GPT-2 style) or `"post"` (after the residual sum,
            as in the original Transformer and BERT).
        is_decoder: causal self-attention (each token sees only earlier tokens). Causal-LM heads always set it.
        classifier_pooling: how a sequence becomes one vector for classification: `"mean"`, `"max"`, `"cls"`
            (first real token) or `"last"` (last real token, natural for causal models).
        classifier_head_tokens: sequence classification of inputs longer than `max_position_embeddings`: keep their
            first `classifier_head_tokens` tokens and their last `max_position_embeddings - classifier_head_tokens`
            (reviews sum up at the end), so pipeline("text-classification") needs no truncation and reads what the
            model was trained on. None: such inputs are refused.
        sparse_prediction: masked LM with `labels`: project only the masked positions onto the vocabulary (as
            ModernBERT does), so `logits` has shape (masked tokens, vocab); pre-training ~5x cheaper at 15 % masking.
        bigram_buckets: hashed bigram embeddings, fastText-style (0 = off): each token also adds the vector of its
            (previous token, token) pair, hashed into this many rows, so the first layer already sees word pairs, as
            the n-gram features of NBSVM do. For models that read whole inputs (classification): a cached decoding
            step does not have the previous token, so a causal model with bigrams refuses to use a cache.
        ngram_buckets: sequence classification only (0 = off): a linear bag-of-n-grams path beside the Transformer,
            as NBSVM (Wang & Manning 2012) is. Each distinct token n-gram (n = 1..`ngram_order`) of the whole input,
            before head-and-tail cutting, is hashed into this many rows; its per-label weight is scaled by the n-gram's
            naive-Bayes log-count ratio (`fit_ngram_log_count_ratios`), and the sum is added to the logits.
        ngram_order: the longest n-gram of the n-gram path (1 = tokens only, 3 = tokens, pairs and triples).
        ngram_word_order: the longest word n-gram the n-gram path adds to its token n-grams (0 = none, 2 = words and
            word pairs), hashed into the same rows. Words are read off the tokens (lowercased runs of letters, digits
            and apostrophes; runs of ! and ?), using a table of the tokenizer's pieces that
            `fit_ngram_log_count_ratios(..., tokenizer=...)` fills and the model saves.
        unpad_inputs: when a batch is padded and nothing is cached, run the token-wise layers (projections, MLP,
            norms) on the real tokens only and put them back in their padded places just for attention, as
            ModernBERT does. Same results up to float rounding; output vectors and logits at padding positions are
            0. An encoder-decoder trained on `labels` alone takes their trailing -100 positions as target padding.
        initializer_range: standard deviation of the normal weight initialisation.
        tie_word_embeddings: share the input embedding matrix with the output (LM) projection (and, in an
            encoder-decoder, between encoder and decoder, as in BART).
        is_encoder_decoder: an encoder (bidirectional) reads the source, a decoder (causal self-attention, then
            cross-attention to the encoder output, then MLP) writes the target. Set by
            `ScratchformerForConditionalGeneration`'s users; encoder-only and decoder-only models leave it False.
        encoder_layers: blocks in the encoder of an encoder-decoder (defaults to `num_hidden_layers`).
        decoder_layers: blocks in the decoder of an encoder-decoder (defaults to `num_hidden_layers`).
        decoder_start_token_id: the token the decoder is fed first (labels are shifted right behind it); an
            encoder-decoder needs one.
    """

    model_type = "scratchformer"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the cache output, under its 5.24 and 5.23 names
    # How transformers' own distributed engine (`from_pretrained(..., distributed_config=DistributedConfig(...))`)
    # splits the bare model, as Llama declares it; the heads add their own rules (`_tp_plan`, `_fsdp_plan`, ...).
    # Tensor parallel: each process keeps some heads of Q/K/V (colwise) and multiplies its heads' part of the output
    # projection (rowwise, summed across processes); the MLP likewise; the token table is split by rows of the
    # vocabulary (it is the LM head's weight too).
    base_model_tp_plan = {
        "embeddings.token_embeddings": "embedding_rowwise",
        "layers.*.attention.q_proj": "colwise",
        "layers.*.attention.k_proj": "colwise",
        "layers.*.attention.v_proj": "colwise",
        "layers.*.attention.o_proj": "rowwise",
        "layers.*.mlp.fc_in": "colwise",
        "layers.*.mlp.fc_out": "rowwise",
    }
    # FSDP2: each block is a unit whose weights are gathered for its forward and freed after; the final norm is kept.
    base_model_fsdp_plan = {"layers.*": "free_full_weight", "final_norm": "keep_full_weight"}
    # Pipeline parallel: the blocks are divided between processes, in order (parallelism.py adapts the stages).
    base_model_pp_plan = {
        "embeddings": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "final_norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 16000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    position_embedding_type: str = "learned"
    rope_theta: float | int = 10000.0
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    classifier_dropout: float | int | None = None
    layer_norm_eps: float = 1e-5
    norm_placement: str = "pre"
    is_decoder: bool = False
    classifier_pooling: str = "mean"
    classifier_head_tokens: int | None = None
    sparse_prediction: bool = False
    bigram_buckets: int = 0
    ngram_buckets: int = 0
    ngram_order: int = 3
    ngram_word_order: int = 0
    unpad_inputs: bool = True
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    is_encoder_decoder: bool = False
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    decoder_start_token_id: int | None = None
    auto_map: dict | None = None

    def __post_init__(self, **kwargs):
        if self.auto_map is None:
            self.auto_map = dict(AUTO_MAP)
        if self.is_encoder_decoder:  # explicit counts, so get_text_config(decoder=True) (used by caches) sees them
            self.encoder_layers = self.num_hidden_layers if self.encoder_layers is None else self.encoder_layers
            self.decoder_layers = self.num_hidden_layers if self.decoder_layers is None else self.decoder_layers
        super().__post_init__(**kwargs)
        if self.id2label is not None and self.label2id is None:  # transformers 5 no longer derives it
            self.label2id = {label: index for index, label in self.id2label.items()}
        self.validate_scratchformer()

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    def validate_scratchformer(self):
        """Raise ValueError naming the first field whose value the model cannot be built with."""
        from transformers.activations import ACT2FN

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ScratchformerConfig: {name} must be a positive integer, got {value!r}")
        if self.is_encoder_decoder:
            for name in ("encoder_layers", "decoder_layers"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"ScratchformerConfig: {name} must be a positive integer, got {value!r}")
            if self.decoder_start_token_id is None:
                raise ValueError(
                    "ScratchformerConfig: an encoder-decoder (is_encoder_decoder=True) needs decoder_start_token_id, "
                    "the first token fed to the decoder (e.g. the tokenizer's bos_token_id)"
                )
        for name, least in (("bigram_buckets", 0), ("ngram_buckets", 0), ("ngram_order", 1), ("ngram_word_order", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"ScratchformerConfig: {name} must be an integer >= {least}, got {value!r}")
        if self.classifier_head_tokens is not None and not (
            isinstance(self.classifier_head_tokens, int) and 0 <= self.classifier_head_tokens < self.max_position_embeddings
        ):
            raise ValueError(
                f"ScratchformerConfig: classifier_head_tokens must be None or in [0, max_position_embeddings="
                f"{self.max_position_embeddings}), got {self.classifier_head_tokens!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"ScratchformerConfig: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        _check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        _check_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _check_choice("classifier_pooling", self.classifier_pooling, CLASSIFIER_POOLINGS)
        if self.position_embedding_type == "rotary" and self.head_dim % 2:
            raise ValueError(f"ScratchformerConfig: rotary positions need an even head_dim, got {self.head_dim}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"ScratchformerConfig: unknown hidden_act {self.hidden_act!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"ScratchformerConfig: {name} must be in [0, 1), got {value!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"ScratchformerConfig: layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            ids = getattr(self, name)
            for token_id in ids if isinstance(ids, list) else [ids]:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"ScratchformerConfig: {name}={token_id} is outside the vocabulary (vocab_size={self.vocab_size})"
                    )

    def to_diff_dict(self) -> dict:
        """What save_pretrained writes; an encoder-only or decoder-only config leaves out the unset encoder-decoder
        fields, so its config.json is exactly what it was before encoder-decoders existed."""
        saved = super().to_diff_dict()
        if not self.is_encoder_decoder:
            for name in ("encoder_layers", "decoder_layers", "decoder_start_token_id"):
                if saved.get(name, 0) is None:
                    del saved[name]
        return saved

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """Build from a dict, refusing another model type's config instead of loading it half-right."""
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"This config has model_type={model_type!r}, not {cls.model_type!r}: it was saved by another "
                f"architecture and cannot be loaded as a {cls.__name__}."
            )
        return super().from_dict(config_dict, **kwargs)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    """Raise ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"ScratchformerConfig: {name} must be one of {choices}, got {value!r}")


__all__ = ["ScratchformerConfig"]

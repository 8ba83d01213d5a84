"""train_tokenizer: a byte-level BPE tokenizer trained with the `tokenizers` library, returned ready for transformers."""

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Ids 0-2 match ScratchformerConfig's default pad/bos/eos ids.
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>"}


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 16000,
    min_frequency: int = 2,
    model_max_length: int = 512,
    add_bos_token: bool = False,
    add_eos_token: bool = False,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it with pad/bos/eos/unk/mask tokens set.

    Byte-level BPE never meets an unknown character and decodes back to exactly the input text. Set
    `add_bos_token` for `cls` pooling (the classifier then reads the `<s>` vector), `add_eos_token` to end
    every encoded text with `</s>`. The result saves with `save_pretrained` and reloads with plain
    `AutoTokenizer.from_pretrained` (no custom code).
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} is too small: byte-level BPE needs at least 256 byte tokens + specials")
    specials = list(SPECIAL_TOKENS.values())
    texts = _non_empty(texts)

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    # add_prefix_space=False keeps encode -> decode an exact round trip (no invented leading space).
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)

    tokens = dict(SPECIAL_TOKENS)
    # "<mask>" swallows the space before it, so "a <mask> film" masks the word " great" the model was trained on.
    tokens["mask_token"] = AddedToken(SPECIAL_TOKENS["mask_token"], lstrip=True, special=True)
    tokenizer.add_special_tokens([tokens["mask_token"]])  # the trainer added it without lstrip
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        add_bos_token=add_bos_token,
        add_eos_token=add_eos_token,
        **tokens,
    )


def _non_empty(texts: Iterable[str]) -> Iterable[str]:
    """Yield the texts, refusing a corpus with no text at all (the trainer would silently learn only bytes)."""
    seen_any = False
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"train_tokenizer expects strings, got {type(text).__name__}")
        if text:
            seen_any = True
            yield text
    if not seen_any:
        raise ValueError("train_tokenizer got no non-empty text to learn from")

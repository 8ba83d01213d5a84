"""The LM recipe's measurements: bits per byte by hand on a uniform model, and the decoding statistics."""

import math

import pytest
import torch
from conftest import tiny_config

from scratchformer import ScratchformerForCausalLM
from training.lm import bits_per_byte, continuation_statistics, first_sentence, readable, scored_windows


def uniform_model(tokenizer) -> ScratchformerForCausalLM:
    """A causal LM whose logits are all zero (final norm zeroed, no head bias): uniform over its vocabulary."""
    config = tiny_config(vocab_size=len(tokenizer), is_decoder=True, position_embedding_type="rotary",
                         max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id)
    model = ScratchformerForCausalLM(config).eval()
    with torch.no_grad():
        model.model.final_norm.weight.zero_()
        model.model.final_norm.bias.zero_()
    return model


@pytest.mark.parametrize("block_size", [2, 7, 32])
def test_a_uniform_model_scores_log2_vocabulary_bits_per_token(tokenizer, block_size):
    texts = ["a great film, truly.", "i hated every minute of it", "Ünïcode bytes: 日本 count too"]
    model = uniform_model(tokenizer)
    tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)  # each review and its </s>
    size = sum(len(t.encode("utf-8")) for t in texts)
    assert size > sum(map(len, texts))  # the multi-byte characters are counted in bytes, not characters
    result = bits_per_byte(model, tokenizer, texts, block_size=block_size, batch_size=3)
    assert result["tokens"] == tokens and result["bytes"] == size
    assert result["bits_per_byte"] == pytest.approx(tokens * math.log2(len(tokenizer)) / size, rel=1e-5)
    assert result["perplexity"] == pytest.approx(len(tokenizer), rel=1e-4)


def test_scored_windows_predict_every_token_but_the_first_exactly_once():
    ids = list(range(23))
    for block_size in (2, 5, 23, 40):
        windows = scored_windows(ids, block_size)
        predicted = [token for window in windows for token in window[1:]]
        assert predicted == ids[1:] and all(len(w) <= block_size for w in windows)


def test_continuation_statistics_by_hand():
    known = {"the", "film", "was", "good"}
    stats = continuation_statistics(["the film was good the film was good", "  \n", "zzq film"], known)
    # words: the film was good the film was good zzq film -> 10 words, 5 distinct
    assert stats["distinct_1"] == pytest.approx(5 / 10)
    # bigrams: 7 in the first, 1 in the third; distinct: (the film) (film was) (was good) (good the) (zzq film)
    assert stats["distinct_2"] == pytest.approx(5 / 8)
    # 4-grams of the first: 5, of which "the film was good" repeats once
    assert stats["repeated_4gram_share"] == pytest.approx(1 / 5)
    assert stats["whitespace_only_share"] == pytest.approx(1 / 3)
    assert stats["known_word_share"] == pytest.approx(9 / 10)


def test_first_sentence_is_the_prompt():
    assert first_sentence("  What a film! I loved it.") == "What a film!"
    assert first_sentence("No end here") == "No end here"
    assert first_sentence("Mr.Smith was great. Yes.") == "Mr.Smith was great."


def test_readable_rejects_blank_looping_and_narrow_continuations():
    reviews = {"whitespace_only_share": 0.0, "repeated_4gram_share": 0.0, "distinct_2": 0.8}
    fine = {"whitespace_only_share": 0.0, "repeated_4gram_share": 0.01, "distinct_2": 0.75}
    assert readable(fine, reviews)
    assert not readable({**fine, "whitespace_only_share": 0.01}, reviews)
    assert not readable({**fine, "repeated_4gram_share": 0.3}, reviews)
    assert not readable({**fine, "distinct_2": 0.5}, reviews)

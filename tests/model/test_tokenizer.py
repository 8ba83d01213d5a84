"""train_tokenizer: specials, exact round trip, plain AutoTokenizer reload, bad corpora."""

import pytest
from transformers import AutoTokenizer

from scratchformer import train_tokenizer

TEXTS = ["Hello   world!\n\tTabs and  double spaces.", "ünïcode ✓ and emoji 🎬", "<br /> tags stay as text"]


def test_special_tokens_have_the_configs_default_ids(tokenizer):
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    assert tokenizer.unk_token == "<unk>" and tokenizer.mask_token == "<mask>"
    assert tokenizer.model_max_length == 64


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_is_an_exact_round_trip(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_saved_tokenizer_loads_with_plain_autotokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    for name in ("pad_token", "bos_token", "eos_token", "unk_token", "mask_token"):
        assert getattr(loaded, name) == getattr(tokenizer, name)
    assert loaded.model_max_length == 64


def test_bos_and_eos_are_added_on_request_and_kept_on_reload(corpus, tmp_path):
    tok = train_tokenizer(corpus, vocab_size=300, add_bos_token=True, add_eos_token=True)
    ids = tok("a great film")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("a great film")["input_ids"] == ids


def test_mask_token_absorbs_the_space_before_it(tokenizer):
    ids = tokenizer("a <mask> film")["input_ids"]
    assert tokenizer.mask_token_id in ids
    assert tokenizer.decode(ids) == "a<mask> film"


def test_truncation_respects_model_max_length(tokenizer):
    ids = tokenizer("great " * 200, truncation=True)["input_ids"]
    assert len(ids) == 64


@pytest.mark.parametrize("texts", [[], ["", ""]])
def test_a_corpus_without_text_is_refused(texts):
    with pytest.raises(ValueError, match="no non-empty text"):
        train_tokenizer(texts, vocab_size=300)


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(TEXTS, vocab_size=100)

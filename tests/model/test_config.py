"""Config validation, serialisation and Auto registration."""

import json

import pytest
from conftest import tiny_config
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
)

from scratchformer import (
    ScratchformerConfig,
    ScratchformerForCausalLM,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
    ScratchformerModel,
)


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", 30),  # not divisible by 4 heads
        ("num_attention_heads", 0),
        ("vocab_size", -1),
        ("num_hidden_layers", 1.5),
        ("position_embedding_type", "alibi"),
        ("norm_placement", "sandwich"),
        ("classifier_pooling", "median"),
        ("hidden_act", "not_an_activation"),
        ("hidden_dropout_prob", 1.0),
        ("attention_probs_dropout_prob", -0.1),
        ("layer_norm_eps", 0.0),
        ("pad_token_id", 400),
        ("eos_token_id", -3),
        ("bigram_buckets", -1),
        ("bigram_buckets", 2.5),
        ("classifier_head_tokens", 64),  # must leave room for a tail: < max_position_embeddings
    ],
)
def test_invalid_values_raise_valueerror_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_rotary_needs_even_head_dim():
    with pytest.raises(ValueError, match="rotary"):
        tiny_config(hidden_size=36, num_attention_heads=4, position_embedding_type="rotary")  # head_dim 9


def test_roundtrip_through_json_keeps_every_field(tmp_path):
    config = tiny_config(position_embedding_type="rotary", norm_placement="post", classifier_pooling="max",
                         is_decoder=True, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "scratchformer"
    assert saved["auto_map"]["AutoModelForSequenceClassification"].endswith("ScratchformerForSequenceClassification")
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ScratchformerConfig)
    for field in ("position_embedding_type", "norm_placement", "classifier_pooling", "is_decoder", "hidden_size"):
        assert getattr(loaded, field) == getattr(config, field)
    assert loaded.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert loaded.label2id == {"NEGATIVE": 0, "POSITIVE": 1}


def test_config_of_another_model_type_is_refused(tmp_path):
    BertConfig(hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='bert'"):
        ScratchformerConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='bert'"):
        ScratchformerForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "auto_class, head",
    [
        (AutoModel, ScratchformerModel),
        (AutoModelForCausalLM, ScratchformerForCausalLM),
        (AutoModelForSequenceClassification, ScratchformerForSequenceClassification),
        (AutoModelForMaskedLM, ScratchformerForMaskedLM),
    ],
)
def test_auto_classes_build_and_load_each_head(tmp_path, auto_class, head):
    config = tiny_config()
    assert type(auto_class.from_config(config)) is head
    head(config).save_pretrained(tmp_path)
    assert type(auto_class.from_pretrained(tmp_path)) is head


def test_causal_lm_is_causal_without_touching_the_callers_config():
    config = tiny_config()
    model = ScratchformerForCausalLM(config)
    assert model.config.is_decoder and not config.is_decoder

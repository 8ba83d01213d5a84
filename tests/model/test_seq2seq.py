"""The encoder-decoder (ScratchformerForConditionalGeneration): cache, greedy, beam, padding, attentions, errors."""

import json

import pytest
import torch
from conftest import tiny_config
from test_generation import pad_right, reference_beam_search
from test_modeling import count_mlp_rows
from transformers import AutoModelForSeq2SeqLM, EncoderDecoderCache

from scratchformer import ScratchformerConfig, ScratchformerForConditionalGeneration, ScratchformerModel
from scratchformer.compat import cache_of
from scratchformer.modeling_scratchformer import shift_tokens_right

START = 1


def seq2seq_config(**overrides) -> ScratchformerConfig:
    settings = dict(is_encoder_decoder=True, decoder_start_token_id=START, encoder_layers=2, decoder_layers=3,
                    eos_token_id=None, pad_token_id=0, bos_token_id=START)
    settings.update(overrides)
    return tiny_config(**settings)


@pytest.fixture(params=["learned", "rotary"])
def model(request):
    torch.manual_seed(1)
    model = ScratchformerForConditionalGeneration(seq2seq_config(position_embedding_type=request.param)).eval()
    with torch.no_grad():  # a peaked next-token distribution, so beams really differ (lm_head is the tied embedding)
        model.lm_head.weight.mul_(20)
    return model


def source(length: int, batch: int = 1) -> torch.Tensor:
    return torch.randint(5, 400, (batch, length))


class Decoder:
    """The model seen as a next-token scorer of decoder inputs for one fixed source (what the reference needs)."""

    def __init__(self, model, source_ids):
        self.model, self.source_ids = model, source_ids

    def __call__(self, decoder_input_ids):
        with torch.no_grad():
            return self.model(self.source_ids, decoder_input_ids=decoder_input_ids)


def count_calls(modules) -> list[int]:
    """Attach a counter of forward calls to each module."""
    calls = [0]
    for module in modules:
        module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def count_source_projections(model) -> list[int]:
    """Count how often the decoder's cross-attention projects an encoder output to keys and values."""
    calls = [0]
    for block in model.decoder.layers:
        block.cross_attention.k_proj.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_encoder_and_decoder_share_one_embedding_and_have_their_own_depths(model):
    embedding = model.encoder.embeddings.token_embeddings.weight
    assert model.decoder.embeddings.token_embeddings.weight is embedding and model.lm_head.weight is embedding
    assert len(model.encoder.layers) == 2 and len(model.decoder.layers) == 3
    assert all(block.cross_attention is None for block in model.encoder.layers)
    assert all(block.cross_attention.is_cross_attention for block in model.decoder.layers)


def test_labels_give_shifted_decoder_inputs_and_token_cross_entropy(model):
    src, labels = source(6, 2), torch.randint(5, 400, (2, 5))
    labels[1, 3:] = -100
    out = model(src, labels=labels)
    decoder_input_ids = torch.tensor([[START] + labels[0, :4].tolist(), [START] + labels[1, :3].tolist() + [0]])
    logits = model(src, decoder_input_ids=decoder_input_ids).logits
    labelled = labels != -100
    torch.testing.assert_close(out.logits[labelled], logits[labelled])
    # The trailing -100 positions are target padding: skipped (unpad_inputs), their logits are 0.
    assert (out.logits[~labelled] == 0).all()
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 400), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_encoder_outputs_are_reusable(model):
    src, tgt = source(6, 2), torch.randint(5, 400, (2, 4))
    encoded = model.get_encoder()(src)
    torch.testing.assert_close(model(encoder_outputs=encoded, decoder_input_ids=tgt).logits,
                               model(src, decoder_input_ids=tgt).logits)
    as_tuple = (encoded.last_hidden_state,)
    torch.testing.assert_close(model(encoder_outputs=as_tuple, decoder_input_ids=tgt).logits,
                               model(src, decoder_input_ids=tgt).logits)


def test_cached_decoding_equals_uncached_logits_and_encodes_the_source_once(model):
    src, tgt = source(7, 2), torch.randint(5, 400, (2, 9))
    encoded = model.get_encoder()(src)
    full = model(encoder_outputs=encoded, decoder_input_ids=tgt, use_cache=False).logits
    source_projections = count_source_projections(model)
    prefix = model(encoder_outputs=encoded, decoder_input_ids=tgt[:, :4], use_cache=True)
    cache, steps = cache_of(prefix), [prefix.logits]
    assert isinstance(cache, EncoderDecoderCache)
    for t in range(4, 9):
        out = model(encoder_outputs=encoded, decoder_input_ids=tgt[:, t : t + 1], cache=cache, use_cache=True)
        cache = cache_of(out)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert source_projections[0] == len(model.decoder.layers)  # once per layer, not once per step
    assert cache.get_seq_length() == 9 and cache.cross_attention_cache.get_seq_length() == 7


def test_generate_encodes_the_source_once(model):
    encoder_blocks = count_calls(model.encoder.layers)
    source_projections = count_source_projections(model)
    model.generate(source(5, 2), max_new_tokens=6, num_beams=3, do_sample=False)
    assert encoder_blocks[0] == len(model.encoder.layers)
    assert source_projections[0] == len(model.decoder.layers)


def test_greedy_equals_an_argmax_loop(model):
    src = source(6)
    ids = torch.tensor([[START]])
    for _ in range(10):
        next_id = model(src, decoder_input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    assert torch.equal(model.generate(src, max_new_tokens=10, do_sample=False), ids)


@pytest.mark.parametrize("num_beams, length_penalty", [(2, 1.0), (4, 1.0), (3, 0.5), (3, 2.0)])
def test_beam_search_equals_a_reference_beam_search(model, num_beams, length_penalty):
    src = source(5)
    eos = int(model.generate(src, max_new_tokens=3, do_sample=False)[0, -1])  # a token the model likes
    expected = reference_beam_search(Decoder(model, src), torch.tensor([START]), num_beams, 8, eos, length_penalty)
    generated = model.generate(
        src, max_new_tokens=8, num_beams=num_beams, num_return_sequences=num_beams, length_penalty=length_penalty,
        early_stopping=True, eos_token_id=eos, pad_token_id=3, do_sample=False,
    )
    assert generated.tolist() == pad_right(expected, 3).tolist()


def test_beam_search_without_eos_keeps_the_most_likely_sequences(model):
    src = source(4)
    expected = reference_beam_search(Decoder(model, src), torch.tensor([START]), 3, 6)
    generated = model.generate(src, max_new_tokens=6, num_beams=3, num_return_sequences=3, do_sample=False)
    assert generated.tolist() == expected


def test_generation_stops_at_eos(model):
    src = source(5)
    free_run = model.generate(src, max_new_tokens=10, do_sample=False)
    eos = int(free_run[0, 4])
    stopped = model.generate(src, max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=0)
    first_eos = free_run[0, 1:].tolist().index(eos) + 1
    assert stopped[0].tolist() == free_run[0, : first_eos + 1].tolist()


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    src = source(5)
    kwargs = dict(max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95)
    torch.manual_seed(5)
    a = model.generate(src, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(a, model.generate(src, **kwargs)) and a.shape == (1, 9)
    greedy = model.generate(src, max_new_tokens=8, do_sample=False)
    assert torch.equal(model.generate(src, max_new_tokens=8, do_sample=True, top_k=1), greedy)
    assert model.generate(src, max_new_tokens=8, do_sample=True, num_return_sequences=4).shape == (4, 9)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_a_batch_of_sources_of_different_lengths_translates_like_each_alone(model, attn_implementation):
    model.set_attn_implementation(attn_implementation)
    sources = [source(n)[0].tolist() for n in (3, 8, 5)]
    input_ids = pad_right(sources, 0)
    attention_mask = pad_right([[1] * len(s) for s in sources], 0)
    for kwargs in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        batch = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, **kwargs)
        for row, src in zip(batch, sources):
            assert row.tolist() == model.generate(torch.tensor([src]), max_new_tokens=6, **kwargs)[0].tolist()


def test_eager_and_sdpa_agree_with_padding(model):
    src, tgt = source(6, 2), torch.randint(5, 400, (2, 5))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    sdpa = model(src, attention_mask=mask, decoder_input_ids=tgt).logits
    model.set_attn_implementation("eager")
    torch.testing.assert_close(model(src, attention_mask=mask, decoder_input_ids=tgt).logits, sdpa, atol=1e-4, rtol=1e-4)


def test_output_attentions_returns_encoder_decoder_and_cross_attentions(model):
    model.set_attn_implementation("eager")
    src, tgt = source(7, 2), torch.randint(5, 400, (2, 4))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    out = model(src, attention_mask=mask, decoder_input_ids=tgt, output_attentions=True)
    assert [a.shape for a in out.encoder_attentions] == [(2, 4, 7, 7)] * 2
    assert [a.shape for a in out.decoder_attentions] == [(2, 4, 4, 4)] * 3
    assert [a.shape for a in out.cross_attentions] == [(2, 4, 4, 7)] * 3  # (batch, heads, target_len, source_len)
    for weights in out.cross_attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 4))
        assert weights[1, :, :, 5:].abs().max() < 1e-6  # padding gets no attention
    assert torch.triu(out.decoder_attentions[0][0, 0], diagonal=1).abs().max() < 1e-6  # the decoder is causal


def test_save_and_auto_load_give_identical_generations(model, tmp_path):
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_scratchformer.ScratchformerForConditionalGeneration"
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is ScratchformerForConditionalGeneration
    assert reloaded.lm_head.weight is reloaded.encoder.embeddings.token_embeddings.weight
    src = source(5, 2)
    assert torch.equal(reloaded.generate(src, max_new_tokens=5, num_beams=2), model.generate(src, max_new_tokens=5, num_beams=2))


def test_encoder_only_and_decoder_only_configs_save_as_before(tmp_path):
    ScratchformerModel(tiny_config()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not {"is_encoder_decoder", "encoder_layers", "decoder_layers", "decoder_start_token_id"} & saved.keys()


def test_bad_input_gives_one_clear_error_each(model):
    with pytest.raises(ValueError, match="empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)
    with pytest.raises(ValueError, match=r"source\(s\) \[1\].*empty"):
        model.generate(source(4, 2), attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), max_new_tokens=3)
    with pytest.raises(ValueError, match="longer than max_position_embeddings"):
        model.generate(source(65), max_new_tokens=3)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        seq2seq_config(decoder_start_token_id=None)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        shift_tokens_right(torch.ones(1, 3, dtype=torch.long), 0, None)
    with pytest.raises(ValueError, match="is_encoder_decoder=True"):
        ScratchformerForConditionalGeneration(tiny_config())


def test_gradient_checkpointing_gives_the_same_gradients_to_encoder_and_decoder():
    torch.manual_seed(0)
    model = ScratchformerForConditionalGeneration(seq2seq_config()).train()
    src, labels = source(6, 2), torch.randint(5, 400, (2, 5))
    model(src, labels=labels).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(src, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], msg=name)
    assert plain["encoder.layers.0.attention.q_proj.weight"].abs().sum() > 0  # the loss reaches the encoder


def test_unpadding_skips_source_and_target_padding_with_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = ScratchformerForConditionalGeneration(seq2seq_config()).train()
    src, attention_mask = source(7, 3), torch.ones(3, 7, dtype=torch.long)
    attention_mask[1, 5:], attention_mask[2, 3:] = 0, 0
    labels = torch.randint(5, 400, (3, 6))
    labels[0, 4:], labels[2, 2:] = -100, -100  # target padding
    labels[1, 2] = -100  # an ignored position inside the target: still computed (later tokens attend to it)
    encoder_rows, decoder_rows = count_mlp_rows(model.encoder), count_mlp_rows(model.decoder)
    results = {}
    for unpad in (False, True):
        model.config.unpad_inputs = unpad
        model.zero_grad()
        encoder_rows.clear(), decoder_rows.clear()
        out = model(src, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        results[unpad] = out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[unpad] += (list(encoder_rows), list(decoder_rows))
    (padded, padded_grads, *_), (unpadded, grads, encoder, decoder) = results[False], results[True]
    assert encoder == [int(attention_mask.sum())] * 2  # real source tokens only
    assert decoder == [4 + 6 + 2] * 3  # each target up to its last label
    labelled = labels != -100
    torch.testing.assert_close(unpadded.logits[labelled], padded.logits[labelled], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(unpadded.loss, padded.loss, atol=1e-5, rtol=1e-4)
    for name in grads:
        torch.testing.assert_close(grads[name], padded_grads[name], atol=1e-5, rtol=1e-4, msg=name)

"""generate() conformance at the level of transformers' own GenerationTesterMixin (tests/generation/test_utils.py):
every decoding mode's dict output, step by step, with and without the KV cache, for the causal LM and the
encoder-decoder; continuing from a returned cache; assisted and prompt-lookup decoding; the static cache; inputs_embeds.

These are what broke silently when transformers 5.24 renamed `past_key_values` to `cache`, so they run on every
transformers release CI tests (see .ci/run).
"""

import pytest
import torch
from conftest import tiny_config

from scratchformer import ScratchformerForCausalLM, ScratchformerForConditionalGeneration
from scratchformer.compat import cache_field, cache_of

BATCH, PROMPT, NEW, BEAMS, LAYERS, HEADS, HIDDEN, VOCAB = 2, 5, 4, 2, 2, 4, 32, 400

MODES = {  # GenerationTesterMixin's four search modes
    "greedy": dict(do_sample=False, num_beams=1),
    "sample": dict(do_sample=True, num_beams=1, top_k=0),
    "beam": dict(do_sample=False, num_beams=BEAMS),
    "beam_sample": dict(do_sample=True, num_beams=BEAMS, top_k=0),
}
DICT_OUTPUTS = dict(
    return_dict_in_generate=True,
    output_scores=True,
    output_logits=True,
    output_attentions=True,
    output_hidden_states=True,
)


def causal_lm(**overrides):
    torch.manual_seed(1)
    config = tiny_config(eos_token_id=None, pad_token_id=0, bos_token_id=1, attn_implementation="eager", **overrides)
    return ScratchformerForCausalLM(config).eval()


def seq2seq(**overrides):
    torch.manual_seed(1)
    settings = dict(
        is_encoder_decoder=True, decoder_start_token_id=1, encoder_layers=LAYERS, decoder_layers=LAYERS,
        eos_token_id=None, pad_token_id=0, bos_token_id=1, attn_implementation="eager",
    )
    config = tiny_config(**{**settings, **overrides})
    return ScratchformerForConditionalGeneration(config).eval()


@pytest.fixture(params=["learned", "rotary"])
def model(request):
    return causal_lm(position_embedding_type=request.param)


@pytest.fixture(params=["learned", "rotary"])
def seq2seq_model(request):
    return seq2seq(position_embedding_type=request.param)


def prompt():
    return torch.randint(5, VOCAB, (BATCH, PROMPT))


def generate(model, inputs, mode, use_cache, seed=7, **kwargs):
    torch.manual_seed(seed)
    return model.generate(inputs, max_new_tokens=NEW, min_new_tokens=NEW, use_cache=use_cache,
                          **MODES[mode], **DICT_OUTPUTS, **kwargs)


def greedy(model, inputs, max_new_tokens, **kwargs):
    """Greedy generate() with its per-step scores."""
    return model.generate(inputs, max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True,
                          output_scores=True, **kwargs)


def assert_same_generation(output, reference, last_steps=None):
    """Same tokens, and the same scores at every step (or the last `last_steps`): a random tiny model's argmax
    often survives a wrong attention, its scores do not."""
    assert torch.equal(output.sequences, reference.sequences)
    steps = reference.scores[-last_steps:] if last_steps else reference.scores
    assert len(output.scores) == len(steps)
    for a, b in zip(output.scores, steps):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def check_scores_and_logits(output, rows):
    for field in ("scores", "logits"):
        steps = getattr(output, field)
        assert len(steps) == NEW, field
        assert all(step.shape == (rows, VOCAB) for step in steps), [s.shape for s in steps]


def check_attentions(steps, rows, query_start, key_start, use_cache, square=True):
    """Per step, per layer: (rows, heads, queries, keys). With the cache, every step after the first has one query
    over all keys so far; without, each step re-reads the whole sequence. Cross-attention (square=False) keeps the
    source as its keys."""
    assert len(steps) == NEW
    for t, layers in enumerate(steps):
        assert len(layers) == LAYERS
        queries = 1 if (use_cache and t > 0) else query_start + t
        keys = (key_start + t) if square else key_start
        for layer in layers:
            assert layer.shape == (rows, HEADS, queries, keys), (t, layer.shape, (rows, HEADS, queries, keys))


def check_hidden_states(steps, rows, start, use_cache):
    assert len(steps) == NEW
    for t, layers in enumerate(steps):
        assert len(layers) == LAYERS + 1  # the embeddings, then each block's output
        queries = 1 if (use_cache and t > 0) else start + t
        assert all(layer.shape == (rows, queries, HIDDEN) for layer in layers), (t, [h.shape for h in layers])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_cache", [True, False])
def test_causal_lm_dict_outputs_have_the_shape_of_every_step(model, mode, use_cache):
    output = generate(model, prompt(), mode, use_cache)
    rows = BATCH * MODES[mode]["num_beams"]
    assert output.sequences.shape == (BATCH, PROMPT + NEW)
    check_scores_and_logits(output, rows)
    check_attentions(output.attentions, rows, PROMPT, PROMPT, use_cache)
    check_hidden_states(output.hidden_states, rows, PROMPT, use_cache)
    if use_cache:
        assert cache_of(output).get_seq_length() == PROMPT + NEW - 1  # the last token is never fed back


@pytest.mark.parametrize("mode", MODES)
def test_causal_lm_cached_and_uncached_generation_agree(model, mode):
    ids = prompt()
    assert_same_generation(generate(model, ids, mode, True), generate(model, ids, mode, False))


def test_causal_lm_continues_from_a_returned_cache_like_one_long_generation(model):
    ids = prompt()
    long = greedy(model, ids, NEW + 3, use_cache=False)  # the ground truth
    first = greedy(model, ids, NEW)
    continued = greedy(model, first.sequences, 3, **cache_field(cache_of(first)))
    assert_same_generation(continued, long, last_steps=3)


def test_causal_lm_forward_takes_the_cache_under_either_name(model):
    ids = prompt()
    full = model(ids).logits
    for name in ("cache", "past_key_values"):
        prefix = model(ids[:, :3], use_cache=True)
        step = model(ids[:, 3:], use_cache=True, **{name: cache_of(prefix)})
        torch.testing.assert_close(torch.cat([prefix.logits, step.logits], 1), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="not both"):
        model(ids[:, 3:], cache=cache_of(prefix), past_key_values=cache_of(prefix))


def test_assisted_and_prompt_lookup_decoding_equal_greedy(model):
    ids = torch.cat([prompt(), prompt()], dim=1)[:1]  # one row: assisted decoding takes batch size 1
    reference = greedy(model, ids, 8, use_cache=False)
    assistant = causal_lm(num_hidden_layers=1, position_embedding_type=model.config.position_embedding_type)
    assert_same_generation(greedy(model, ids, 8), reference)
    assert_same_generation(greedy(model, ids, 8, assistant_model=assistant), reference)
    assert_same_generation(greedy(model, ids, 8, prompt_lookup_num_tokens=3), reference)


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_static_cache_generation_equals_uncached_generation(model, mode):
    ids = prompt()
    static = generate(model, ids, mode, True, cache_implementation="static")
    assert type(cache_of(static)).__name__ == "StaticCache"
    assert_same_generation(static, generate(model, ids, mode, False))


def test_generation_from_inputs_embeds_equals_generation_from_ids(model):
    ids = prompt()
    from_ids = greedy(model, ids, NEW, use_cache=False)
    embeds = model.get_input_embeddings()(ids)
    from_embeds = greedy(model, None, NEW, inputs_embeds=embeds)
    from_ids_new = type(from_ids)(sequences=from_ids.sequences[:, PROMPT:], scores=from_ids.scores)
    assert_same_generation(from_embeds, from_ids_new)  # only the new tokens come back, as for every model
    assert_same_generation(greedy(model, ids, NEW, inputs_embeds=embeds), from_ids)


# ---------------------------------------------------------------------------------------------------------------
# The encoder-decoder
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_cache", [True, False])
def test_seq2seq_dict_outputs_have_the_shape_of_every_step(seq2seq_model, mode, use_cache):
    output = generate(seq2seq_model, prompt(), mode, use_cache)
    rows = BATCH * MODES[mode]["num_beams"]
    assert output.sequences.shape == (BATCH, 1 + NEW)  # the decoder start token, then the new tokens
    check_scores_and_logits(output, rows)
    assert len(output.encoder_attentions) == LAYERS
    # The encoder runs once per source, before the beams are made.
    assert all(a.shape == (BATCH, HEADS, PROMPT, PROMPT) for a in output.encoder_attentions)
    assert len(output.encoder_hidden_states) == LAYERS + 1
    check_attentions(output.decoder_attentions, rows, 1, 1, use_cache)
    check_attentions(output.cross_attentions, rows, 1, PROMPT, use_cache, square=False)
    check_hidden_states(output.decoder_hidden_states, rows, 1, use_cache)


@pytest.mark.parametrize("mode", MODES)
def test_seq2seq_cached_and_uncached_generation_agree(seq2seq_model, mode):
    ids = prompt()
    assert_same_generation(generate(seq2seq_model, ids, mode, True), generate(seq2seq_model, ids, mode, False))


def test_seq2seq_continues_from_a_returned_cache_like_one_long_generation(seq2seq_model):
    ids = prompt()
    long = greedy(seq2seq_model, ids, NEW + 3, use_cache=False)  # the ground truth
    first = greedy(seq2seq_model, ids, NEW)
    # As for transformers' own encoder-decoders: the whole target so far, with a mask as long as it, tells generate()
    # to feed the model only what the cache does not hold yet.
    target = dict(decoder_input_ids=first.sequences, decoder_attention_mask=torch.ones_like(first.sequences))
    continued = greedy(seq2seq_model, ids, 3, **target, **cache_field(cache_of(first)))
    assert_same_generation(continued, long, last_steps=3)


def test_seq2seq_assisted_and_prompt_lookup_decoding_equal_greedy(seq2seq_model):
    ids = prompt()[:1]
    reference = greedy(seq2seq_model, ids, 8, use_cache=False)
    assistant = seq2seq(decoder_layers=1, position_embedding_type=seq2seq_model.config.position_embedding_type)
    assert_same_generation(greedy(seq2seq_model, ids, 8), reference)
    assert_same_generation(greedy(seq2seq_model, ids, 8, assistant_model=assistant), reference)
    assert_same_generation(greedy(seq2seq_model, ids, 8, prompt_lookup_num_tokens=3), reference)


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_seq2seq_static_cache_generation_equals_uncached_generation(seq2seq_model, mode):
    ids = prompt()
    static = generate(seq2seq_model, ids, mode, True, cache_implementation="static")
    assert_same_generation(static, generate(seq2seq_model, ids, mode, False))


def test_seq2seq_generation_from_inputs_embeds_equals_generation_from_ids(seq2seq_model):
    ids = prompt()
    embeds = seq2seq_model.get_input_embeddings()(ids)
    from_embeds = greedy(seq2seq_model, None, NEW, inputs_embeds=embeds)
    assert_same_generation(from_embeds, greedy(seq2seq_model, ids, NEW, use_cache=False))
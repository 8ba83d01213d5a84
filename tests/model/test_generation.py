"""generate(): KV cache, greedy, beam search against a reference, sampling, EOS, streaming, left padding."""

import pytest
import torch
from conftest import tiny_config
from transformers import TextStreamer

from scratchformer import ScratchformerForCausalLM
from scratchformer.compat import cache_of


@pytest.fixture(params=["learned", "rotary"])
def model(request):
    torch.manual_seed(1)
    config = tiny_config(position_embedding_type=request.param, eos_token_id=None, pad_token_id=0, bos_token_id=1)
    model = ScratchformerForCausalLM(config).eval()
    # Larger weights make the tiny model's next-token distribution peaked, so beams really differ.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def test_cached_logits_equal_uncached_logits(model):
    ids = torch.randint(5, 400, (2, 12))
    full = model(ids, use_cache=False).logits
    prefix = model(ids[:, :8], use_cache=True)
    cache, steps = cache_of(prefix), [prefix.logits]
    for t in range(8, 12):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        cache = cache_of(out)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_greedy_equals_an_argmax_loop(model):
    prompt = torch.randint(5, 400, (1, 5))
    ids = prompt
    for _ in range(10):
        next_id = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    generated = model.generate(prompt, max_new_tokens=10, do_sample=False)
    assert torch.equal(generated, ids)


def test_one_beam_is_greedy(model):
    prompt = torch.randint(5, 400, (2, 4))
    greedy = model.generate(prompt, max_new_tokens=8, do_sample=False)
    beam = model.generate(prompt, max_new_tokens=8, do_sample=False, num_beams=1)
    assert torch.equal(greedy, beam)


def reference_beam_search(model, prompt, num_beams, max_new_tokens, eos_token_id=None, length_penalty=1.0):
    """Textbook beam search (early_stopping=True), written without transformers' generation code.

    Each step expands every live beam by every token and ranks the candidates by total log-probability.
    A candidate among the top `num_beams` that ends in EOS becomes a finished hypothesis scored
    total / new_tokens ** length_penalty; the best `num_beams` non-EOS candidates stay alive. At the length
    limit the top live candidates are finished too. Search stops once `num_beams` hypotheses are finished.
    """
    finished = []  # (score, token list)
    beams = [(0.0, prompt.tolist())]
    for step in range(1, max_new_tokens + 1):
        candidates = []
        for total, tokens in beams:
            with torch.no_grad():
                log_probs = torch.log_softmax(model(torch.tensor([tokens])).logits[0, -1].float(), -1)
            top = torch.topk(log_probs, 2 * num_beams)
            candidates += [(total + lp.item(), tokens + [tok.item()]) for lp, tok in zip(top.values, top.indices)]
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[: 2 * num_beams]
        last_step = step == max_new_tokens
        for rank, (total, tokens) in enumerate(candidates[:num_beams]):
            if tokens[-1] == eos_token_id or last_step:
                finished.append((total / step**length_penalty, tokens))
        finished = sorted(finished, key=lambda f: -f[0])[:num_beams]
        beams = [c for c in candidates if c[1][-1] != eos_token_id][:num_beams]
        if len(finished) == num_beams:
            break
    return [tokens for _, tokens in finished]


def pad_right(sequences, pad):
    width = max(map(len, sequences))
    return torch.tensor([s + [pad] * (width - len(s)) for s in sequences])


@pytest.mark.parametrize("num_beams, length_penalty", [(2, 1.0), (4, 1.0), (3, 0.5), (3, 2.0)])
def test_beam_search_equals_a_reference_beam_search(model, num_beams, length_penalty):
    prompt = torch.randint(5, 400, (1, 4))
    # Pick as EOS a token the model likes, so some hypotheses really finish early.
    eos = int(model.generate(prompt, max_new_tokens=3, do_sample=False)[0, -1])
    expected = reference_beam_search(model, prompt[0], num_beams, 8, eos, length_penalty)
    generated = model.generate(
        prompt,
        max_new_tokens=8,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        length_penalty=length_penalty,
        early_stopping=True,
        eos_token_id=eos,
        pad_token_id=3,  # not 0: transformers fills finished beams with `pad_token_id or eos_token_id`
        do_sample=False,
    )
    assert generated.tolist() == pad_right(expected, 3).tolist()


def test_beam_search_without_eos_keeps_the_most_likely_sequences(model):
    prompt = torch.randint(5, 400, (1, 3))
    expected = reference_beam_search(model, prompt[0], 3, 6)
    generated = model.generate(prompt, max_new_tokens=6, num_beams=3, num_return_sequences=3, do_sample=False)
    assert generated.tolist() == expected


def test_generation_stops_at_eos(model):
    prompt = torch.randint(5, 400, (1, 4))
    free_run = model.generate(prompt, max_new_tokens=10, do_sample=False)
    eos = int(free_run[0, 7])  # the 4th generated token
    stopped = model.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=0)
    first_eos = free_run[0, 4:].tolist().index(eos) + 4  # EOS may already appear earlier
    assert stopped[0].tolist() == free_run[0, : first_eos + 1].tolist()


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    prompt = torch.randint(5, 400, (1, 4))
    kwargs = dict(max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95, top_k=50)
    torch.manual_seed(5)
    a = model.generate(prompt, **kwargs)
    torch.manual_seed(5)
    b = model.generate(prompt, **kwargs)
    assert torch.equal(a, b) and a.shape == (1, 12)
    greedy = model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=1), greedy)
    many = model.generate(prompt, max_new_tokens=8, do_sample=True, num_return_sequences=4)
    assert many.shape == (4, 12)


def test_left_padded_batch_continues_like_each_prompt_alone(model):
    prompts = [torch.randint(5, 400, (n,)).tolist() for n in (3, 7, 5)]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention_mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    for kwargs in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        batch = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, pad_token_id=0, **kwargs)
        for row, prompt in zip(batch, prompts):
            alone = model.generate(torch.tensor([prompt]), max_new_tokens=6, **kwargs)
            assert row[width:].tolist() == alone[0, len(prompt):].tolist()


def test_text_streamer_prints_the_generated_text(model, tokenizer, capsys):
    prompt = tokenizer("a great film", return_tensors="pt")
    streamer = TextStreamer(tokenizer, skip_prompt=True)
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False, streamer=streamer)
    printed = capsys.readouterr().out
    expected = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert printed.strip() == expected.strip() and printed.strip()

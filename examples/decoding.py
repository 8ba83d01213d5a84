"""Greedy and beam search written out, nanoGPT style: what `model.generate()` does for a causal LM, in a page.

The model hands decoding to transformers' GenerationMixin (caches, stopping, many strategies); these two loops are the
ideas underneath, without a cache (every step re-reads the whole sequence), for reading. tests/tools/test_examples.py checks
they give generate()'s tokens.

    python examples/decoding.py DIR "This film"       # a causal LM folder, e.g. runs/imdb-lm
"""

import sys

import torch


@torch.no_grad()
def greedy(model, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Append the most likely next token, max_new_tokens times. input_ids: [1, L] -> [1, L + max_new_tokens]."""
    for _ in range(max_new_tokens):
        logits = model(input_ids).logits[:, -1, :]  # [1, V]: the scores of the token after the last one
        next_token = logits.argmax(dim=-1, keepdim=True)  # [1, 1]
        input_ids = torch.cat([input_ids, next_token], dim=1)
    return input_ids


@torch.no_grad()
def beam_search(model, input_ids: torch.Tensor, max_new_tokens: int, num_beams: int) -> torch.Tensor:
    """Keep the num_beams likeliest sequences (sum of token log-probabilities); extend each by every token, keep the
    best num_beams of all those, repeat; return the best. No end-of-sequence handling: every beam runs full length."""
    beams = input_ids  # [beams, L]: one beam to start
    scores = torch.zeros(1)  # [beams]: log-probability of each beam's new tokens
    for _ in range(max_new_tokens):
        log_probs = model(beams).logits[:, -1, :].float().log_softmax(dim=-1)  # [beams, V]
        candidates = (scores[:, None] + log_probs).flatten()  # [beams * V]: every beam with every next token
        scores, best = candidates.topk(num_beams)  # the num_beams likeliest continuations
        beam, token = best // log_probs.shape[-1], best % log_probs.shape[-1]
        beams = torch.cat([beams[beam], token[:, None]], dim=1)  # [num_beams, L + 1]
    return beams[:1]  # topk sorts: the first beam is the best


if __name__ == "__main__":
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, prompt = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    print("greedy:", tokenizer.decode(greedy(model, ids, 20)[0]))
    print("beam 4:", tokenizer.decode(beam_search(model, ids, 20, num_beams=4)[0]))

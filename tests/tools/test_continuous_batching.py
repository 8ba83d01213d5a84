"""Continuous batching (transformers' paged attention): model.generate_batch() and `python -m scratchformer.serve DIR
--continuous-batching` give every request the tokens greedy generate() gives its prompt alone, with prompts of
different lengths sharing batches, on the model loaded directly and as remote code. Runs under whichever transformers
the venv has (CI runs it under 5.23 and the newest): 5.23's attention functions write the paged cache themselves,
later releases leave it to the model (scratchformer/compat.py, attention_function_writes_cache)."""

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from conftest import REPO_ROOT, WITHOUT_SCRATCHFORMER, running_server, sentiment_corpus, tiny_config, train_briefly
from transformers import ContinuousBatchingConfig, GenerationConfig

from scratchformer import ScratchformerForCausalLM

NEW_TOKENS = 8
# Prompts of 1 to 40 tokens: a 40-token one is longer than a batch (MAX_BATCH_TOKENS), so its prefill is split over
# two steps, the second reading the first's keys from the paged cache; decoding steps of the others share those batches.
PROMPTS = [[5, 6, 7], list(range(10, 40)), [42], [3, 1, 4, 1, 5, 9, 2, 6], list(range(100, 140)), [77, 78]]
MAX_BATCH_TOKENS = 32
# A small cache: sized by default for a GPU's memory, the start-up warmup would take tens of seconds on a CPU.
CB_CONFIG = dict(page_size=16, num_blocks=32, max_batch_tokens=MAX_BATCH_TOKENS)


def greedy(max_new_tokens: int = NEW_TOKENS) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=2, pad_token_id=0)


def generate_alone(model, prompt: list[int], max_new_tokens: int = NEW_TOKENS) -> list[int]:
    out = model.generate(torch.tensor([prompt]), generation_config=greedy(max_new_tokens))
    return out[0, len(prompt):].tolist()


def generate_batch(model, prompts, max_new_tokens: int = NEW_TOKENS) -> list:
    results = model.generate_batch(inputs=prompts, generation_config=greedy(max_new_tokens),
                                   continuous_batching_config=ContinuousBatchingConfig(**CB_CONFIG))
    return list(results.values())  # in the order of the prompts


def tiny_lm(position_embedding_type: str, **overrides) -> ScratchformerForCausalLM:
    # Wide initial weights: a random model whose greedy continuations vary from token to token (at the usual 0.02,
    # they repeat one token, which would hide a mix-up between requests).
    config = tiny_config(vocab_size=256, max_position_embeddings=128, position_embedding_type=position_embedding_type,
                         initializer_range=0.5, **overrides)
    return ScratchformerForCausalLM(config).eval()


ATTENTION = ["sdpa", "eager"]  # eager runs as transformers' paged|eager, which 5.23 has write the paged cache
POSITIONS = ["learned", "rotary"]


@pytest.mark.parametrize("attn_implementation", ATTENTION)
@pytest.mark.parametrize("position_embedding_type", POSITIONS)
def test_generate_batch_gives_each_request_generates_tokens(position_embedding_type, attn_implementation):
    model = tiny_lm(position_embedding_type)
    model.set_attn_implementation(attn_implementation)
    expected = [generate_alone(model, prompt) for prompt in PROMPTS]
    assert len({tuple(tokens) for tokens in expected}) > 1  # the requests' answers differ: a mix-up would show
    results = generate_batch(model, PROMPTS)
    assert [r.error for r in results] == [None] * len(PROMPTS)
    assert [r.prompt_ids for r in results] == PROMPTS
    assert [r.generated_tokens for r in results] == expected
    assert model.config._attn_implementation == attn_implementation  # generate_batch puts it back


# Runs in a child process where `scratchformer` cannot be imported (as tests/hub/test_remote_code.py does), so the
# folders load as remote code: transformers_modules' copy of modeling_scratchformer.py and compat.py.
REMOTE_CHILD = WITHOUT_SCRATCHFORMER + textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

    cases = json.load(open(sys.argv[1]))
    for case in cases:
        model = AutoModelForCausalLM.from_pretrained(case["path"], trust_remote_code=True,
                                                     attn_implementation=case["attn_implementation"]).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        results = model.generate_batch(inputs=case["prompts"], generation_config=GenerationConfig(**case["greedy"]),
                                       continuous_batching_config=ContinuousBatchingConfig(**case["cb_config"]))
        got = [(r.error, r.generated_tokens) for r in results.values()]
        assert got == [(None, tokens) for tokens in case["expected"]], (case["path"], got, case["expected"])
    print("REMOTE-CB-OK", len(cases))
    """
).replace("REPO_ROOT", repr(REPO_ROOT))


def test_generate_batch_of_a_remote_code_model_gives_generates_tokens(tmp_path):
    cases = []
    for position_embedding_type in POSITIONS:
        model = tiny_lm(position_embedding_type)
        path = tmp_path / position_embedding_type
        model.save_pretrained(path)
        expected = [generate_alone(model, prompt) for prompt in PROMPTS]
        for attn_implementation in ATTENTION:
            cases.append(dict(path=str(path), attn_implementation=attn_implementation, prompts=PROMPTS,
                              expected=expected, greedy=greedy().to_diff_dict(), cb_config=CB_CONFIG))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", REMOTE_CHILD, str(tmp_path / "cases.json")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"REMOTE-CB-OK {len(cases)}" in result.stdout


def test_a_bigram_model_gets_a_clear_error_not_tokens():
    model = tiny_lm("rotary", bigram_buckets=53)
    results = generate_batch(model, PROMPTS[:2])
    for result in results:
        assert result.generated_tokens == []
        assert "bigram_buckets" in result.error and "use_cache=False" in result.error


def test_a_request_past_the_learned_positions_gets_a_clear_error():
    model = tiny_lm("learned")
    model.config.max_position_embeddings = 12  # the table has 128 rows: without the check, positions 12+ would run
    (result,) = generate_batch(model, [list(range(1, 9))], max_new_tokens=8)
    assert "max_position_embeddings=12" in result.error


# transformers serve ----------------------------------------------------------------------------------------------

openai = pytest.importorskip("openai", reason="transformers serve needs the openai package (the integrations extra)")
from test_serve import expected_continuation  # noqa: E402 (after the skip: it needs openai too)


def log_requests_flags() -> list[str]:
    """Flags that make the server log whether a request ran with continuous batching: 5.23 always says `CB: True`,
    later releases say `continuous batching` with --enable-log-requests."""
    from transformers.cli.serve import Serve

    return ["--enable-log-requests"] if "enable_log_requests" in inspect.signature(Serve.__init__).parameters else []


def test_served_with_continuous_batching_completions_match_generate(tmp_path, tokenizer):
    model = ScratchformerForCausalLM(tiny_config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, position_embedding_type="rotary"))
    train_briefly(model, tokenizer, sentiment_corpus(32)[0], steps=30)
    folder = tmp_path / "lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    log_path = tmp_path / "serve.log"
    flags = ["--continuous-batching", "--cb-num-blocks", str(CB_CONFIG["num_blocks"]),
             "--cb-max-batch-tokens", str(CB_CONFIG["max_batch_tokens"]), "--log-level", "info", *log_requests_flags()]
    prompts = ["honestly a", "so boring", "well i loved every", "overall", "a dull story and", "i hated"]
    with running_server(folder, log_path, *flags) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed-locally")
        answer = client.completions.create(model=str(folder), prompt=prompts[0], max_tokens=8)
        assert answer.choices[0].text == expected_continuation(model, tokenizer, prompts[0], 8)
        pieces = [chunk.choices[0].text for chunk in
                  client.completions.create(model=str(folder), prompt=prompts[1], max_tokens=8, stream=True)]
        assert len(pieces) > 1  # streamed piece by piece
        assert "".join(pieces) == expected_continuation(model, tokenizer, prompts[1], 8)

        # Requests at the same time, streamed, of different prompt lengths: continuous batching runs them together.
        texts = {}

        def stream(prompt):
            chunks = client.completions.create(model=str(folder), prompt=prompt, max_tokens=10, stream=True)
            texts[prompt] = "".join(chunk.choices[0].text for chunk in chunks)

        threads = [threading.Thread(target=stream, args=(prompt,)) for prompt in prompts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert texts == {prompt: expected_continuation(model, tokenizer, prompt, 10) for prompt in prompts}
    log = log_path.read_text()
    assert re.search(r"CB: True|prompt tokens, continuous batching", log), log[-3000:]  # not plain generate()
    assert "Traceback" not in log, log[-3000:]

"""`python -m scratchformer.serve` (transformers serve): queried with the openai client on 127.0.0.1, /v1/completions
answers with the continuation greedy generate() gives, plain and streamed. (No chat template: an IMDb language model
continues reviews, it does not chat; /v1/chat/completions needs one.)"""

import pytest
import torch
from conftest import running_server, sentiment_corpus, tiny_config, train_briefly

from scratchformer import ScratchformerForCausalLM

openai = pytest.importorskip("openai", reason="transformers serve needs the openai package (the integrations extra)")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    train_briefly(model, tokenizer, sentiment_corpus(32)[0], steps=30)
    folder = tmp_path_factory.mktemp("serve") / "lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with running_server(folder, folder.parent / "serve.log") as url:
        yield url, str(folder), model.eval()


def expected_continuation(model, tokenizer, prompt: str, new_tokens: int) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_completions_answer_with_generates_continuation(served, tokenizer):
    url, folder, model = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed-locally")
    answer = client.completions.create(model=folder, prompt="honestly a", max_tokens=8)
    assert answer.object == "text_completion"
    assert answer.choices[0].text == expected_continuation(model, tokenizer, "honestly a", 8)


def test_streamed_completions_add_up_to_the_same_text(served, tokenizer):
    url, folder, model = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed-locally")
    pieces = [chunk.choices[0].text for chunk in
              client.completions.create(model=folder, prompt="so boring", max_tokens=8, stream=True)]
    assert len(pieces) > 1  # streamed piece by piece
    assert "".join(pieces) == expected_continuation(model, tokenizer, "so boring", 8)

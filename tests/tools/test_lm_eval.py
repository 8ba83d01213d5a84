"""lm-evaluation-harness (`lm_eval --model hf`) runs our local IMDb tasks on a saved causal LM with
trust_remote_code, and its log-likelihoods equal the ones computed directly from the model's logits (a client we
did not write exercises our padding, batching and logits_to_keep)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, sentiment_corpus, tiny_config, train_briefly

from bench.accuracy.lm_eval_data import write_tasks
from scratchformer import ScratchformerForCausalLM

pytest.importorskip("lm_eval")
LM_EVAL = shutil.which("lm_eval", path=os.path.dirname(sys.executable)) or shutil.which("lm_eval")


def log_likelihood(model, context: list[int], continuation: list[int]) -> float:
    """log p(continuation | context), summed over its tokens, from one forward pass."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        log_probs = model(ids).logits[0, :-1].log_softmax(-1)
    targets = ids[0, len(context):]
    return log_probs[len(context) - 1 :].gather(-1, targets[:, None]).sum().item()


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                                 max_position_embeddings=256))  # one window per review
    train_briefly(model, tokenizer, sentiment_corpus(64)[0], steps=30)
    folder = tmp_path_factory.mktemp("lm-eval") / "lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.eval()


def test_lm_eval_runs_our_tasks_and_agrees_with_our_log_likelihoods(lm_folder, tokenizer, tmp_path):
    folder, model = lm_folder
    filler = "the plot follows a family in a small town and the camera work is fine"
    reviews = [f"{a} {filler}, {b} and {filler} but {c}"  # 40 words: a 24-word context, 12-word continuations
               for a, b, c in zip(*(sentiment_corpus(24, seed=seed)[0] for seed in (1, 2, 3)))]
    write_tasks(reviews, tmp_path / "runs" / "lm_eval", seed=0)  # where the task YAMLs look, from the cwd
    command = [LM_EVAL, "--model", "hf", "--model_args", f"pretrained={folder},trust_remote_code=True,dtype=float32",
               "--tasks", "imdb_rolling,imdb_continuation",
               "--include_path", os.path.join(REPO_ROOT, "bench", "accuracy", "lm_eval_tasks"),
               "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "out"), "--log_samples"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    samples = {task: [json.loads(line) for path in (tmp_path / "out").rglob(f"samples_{task}_*.jsonl")
                      for line in path.read_text().splitlines()]
               for task in ("imdb_rolling", "imdb_continuation")}
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    assert results["imdb_rolling"]["bits_per_byte,none"] > 0 and 0 <= results["imdb_continuation"]["acc,none"] <= 1

    assert len(samples["imdb_rolling"]) == len(reviews)
    for sample in samples["imdb_rolling"]:  # one window each: the whole review after lm-eval's prefix token (<s>)
        ids = tokenizer(sample["doc"]["text"], add_special_tokens=False)["input_ids"]
        ours = log_likelihood(model, [tokenizer.bos_token_id], ids)
        assert float(sample["filtered_resps"][0]) == pytest.approx(ours, abs=1e-3), sample["doc"]["text"]

    assert samples["imdb_continuation"]
    for sample in samples["imdb_continuation"]:
        context = sample["doc"]["context"]
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        for choice, response in zip(sample["doc"]["choices"], sample["filtered_resps"]):
            whole = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"]  # lm-eval's _encode_pair
            ours = log_likelihood(model, context_ids, whole[len(context_ids):])
            assert float(response[0]) == pytest.approx(ours, abs=1e-3), (context, choice)  # [ll, is_greedy] as text

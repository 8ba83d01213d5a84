"""Saved folders load with trust_remote_code=True in a process where `scratchformer` cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from conftest import REPO_ROOT, WITHOUT_SCRATCHFORMER, tiny_config

from scratchformer import (
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
    ScratchformerModel,
)


# Runs in a child process: hide the (editable) install of scratchformer, prove it is gone, then load each folder.
CHILD = WITHOUT_SCRATCHFORMER + textwrap.dedent(
    """
    import json, sys
    import torch
    import transformers

    cases = json.load(open(sys.argv[1]))
    for case in cases:
        auto = getattr(transformers, case["auto_class"])
        model = auto.from_pretrained(case["path"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        ids = torch.tensor(case["input_ids"])
        with torch.no_grad():
            out = model(ids, **{k: torch.tensor(v) for k, v in case["forward_kwargs"].items()})
        got = out.logits if hasattr(out, "logits") else out.last_hidden_state
        torch.testing.assert_close(got, torch.tensor(case["expected"]), atol=1e-5, rtol=1e-4)
        if "generated" in case:
            generated = model.generate(ids, max_new_tokens=5, num_beams=2, do_sample=False)
            assert generated.tolist() == case["generated"], (generated.tolist(), case["generated"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(cases[0]["path"], trust_remote_code=True)
    assert tokenizer("a great film")["input_ids"] == json.load(open(sys.argv[2]))
    print("REMOTE-OK", len(cases))
    """
).replace("REPO_ROOT", repr(REPO_ROOT))


def test_every_head_loads_as_remote_code_with_identical_outputs(tmp_path, tokenizer):
    seq2seq = dict(is_encoder_decoder=True, decoder_start_token_id=1, encoder_layers=1, decoder_layers=2)
    heads = {  # auto class: (head, config settings beyond the tiny config)
        "AutoModel": (ScratchformerModel, {}),
        "AutoModelForCausalLM": (ScratchformerForCausalLM, {}),
        "AutoModelForSequenceClassification": (
            ScratchformerForSequenceClassification,
            {"bigram_buckets": 53, "ngram_buckets": 59, "ngram_order": 2, "ngram_word_order": 2},
        ),
        "AutoModelForMaskedLM": (ScratchformerForMaskedLM, {}),
        "AutoModelForSeq2SeqLM": (ScratchformerForConditionalGeneration, seq2seq),
    }
    ids = torch.tensor(tokenizer(["a great film, honestly", "a dull story!! awful"], padding="longest")["input_ids"])
    cases = []
    for auto_class, (head, settings) in heads.items():
        model = head(tiny_config(position_embedding_type="rotary", **settings)).eval()
        if head is ScratchformerForSequenceClassification:  # an n-gram path that shows in the logits
            model.fit_ngram_log_count_ratios(ids.tolist(), [0, 1], tokenizer=tokenizer)
            torch.nn.init.normal_(model.ngram_logits.weight)
        path = tmp_path / auto_class
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        forward_kwargs = {"decoder_input_ids": ids[:, :4].tolist()} if head is ScratchformerForConditionalGeneration else {}
        with torch.no_grad():
            out = model(ids, **{k: torch.tensor(v) for k, v in forward_kwargs.items()})
        case = {
            "auto_class": auto_class,
            "path": str(path),
            "input_ids": ids.tolist(),
            "forward_kwargs": forward_kwargs,
            "expected": (out.logits if hasattr(out, "logits") else out.last_hidden_state).tolist(),
        }
        if head in (ScratchformerForCausalLM, ScratchformerForConditionalGeneration):
            case["generated"] = model.generate(ids, max_new_tokens=5, num_beams=2, do_sample=False).tolist()
        cases.append(case)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "tokens.json").write_text(json.dumps(tokenizer("a great film")["input_ids"]))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "cases.json"), str(tmp_path / "tokens.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"REMOTE-OK {len(heads)}" in result.stdout

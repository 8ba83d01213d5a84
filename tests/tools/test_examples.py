"""The README's quickstart runs end to end (train tokenizer -> model -> generate -> save -> AutoModel reload)."""

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_quickstart_runs_and_reloads_identically(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "examples", "quickstart.py"), "--steps", "30",
         "--output-dir", str(tmp_path / "quickstart")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "same generation" in result.stdout
    assert (tmp_path / "quickstart" / "model.safetensors").exists()


def test_the_hand_written_decoders_give_generates_tokens():
    """examples/decoding.py: greedy and beam search in a page, equal to generate() (no end-of-sequence, so every beam
    runs full length, as the page's loop does)."""
    import importlib.util

    import torch

    from scratchformer import ScratchformerConfig, ScratchformerForCausalLM

    spec = importlib.util.spec_from_file_location("decoding", os.path.join(REPO_ROOT, "examples", "decoding.py"))
    decoding = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decoding)
    torch.manual_seed(0)
    model = ScratchformerForCausalLM(ScratchformerConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=64,
                                                         max_position_embeddings=64, is_decoder=True)).eval()
    model.generation_config.eos_token_id = None
    for prompt_length in (1, 5, 9):
        ids = torch.randint(5, 300, (1, prompt_length))
        expected = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert torch.equal(decoding.greedy(model, ids, 12), expected)
        expected = model.generate(ids, max_new_tokens=12, do_sample=False, num_beams=4, pad_token_id=0)
        assert torch.equal(decoding.beam_search(model, ids, 12, num_beams=4), expected)

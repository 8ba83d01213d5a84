"""transformers' own distributed engine (DistributedConfig: FSDP2, HSDP, tensor and pipeline parallel) on every head,
run for real: torchrun with gloo on CPU, 127.0.0.1, against the same folder in one process (tests/distributed_worker.py).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchformer import (
    ScratchformerConfig,
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
)

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("distributed_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*arguments, nodes: int = 1, timeout: int = 300) -> None:
    """Two processes per node (nodes > 1: several torchrun "machines" on 127.0.0.1, as a multi-node launch does)."""
    port = free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node_rank", str(node),
             "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
             str(WORKER), *map(str, arguments)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        )
        for node in range(nodes)
    ]
    outputs = [launch.communicate(timeout=timeout)[0] for launch in launches]
    for launch, output in zip(launches, outputs):
        assert launch.returncode == 0, output[-4000:]


def config(**overrides) -> ScratchformerConfig:
    sizes = dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ScratchformerConfig(**{**sizes, **overrides})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """One saved folder per head (the classifier with its n-gram table filled), random weights."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    ScratchformerForCausalLM(config(is_decoder=True, position_embedding_type="rotary")).save_pretrained(folder / "causal")
    ScratchformerForMaskedLM(config()).save_pretrained(folder / "masked")
    classifier = ScratchformerForSequenceClassification(config(num_labels=3, ngram_buckets=512))
    with torch.no_grad():
        classifier.ngram_logits.weight.normal_()
        classifier.ngram_logits.log_count_ratio.normal_()
    classifier.save_pretrained(folder / "classify")
    ScratchformerForConditionalGeneration(config(is_encoder_decoder=True, decoder_start_token_id=1)).save_pretrained(
        folder / "seq2seq")
    ScratchformerForCausalLM(config(is_decoder=True, hidden_size=24, num_attention_heads=3)).save_pretrained(
        folder / "three_heads")
    return folder


@pytest.mark.parametrize("mode", ["fsdp", "tp", "pp", "hsdp"])
def test_every_head_gives_one_process_logits_and_generation(mode, models, tmp_path):
    """FSDP2 (and HSDP: two "machines" of two processes), tensor parallel: every head, sharded for real, gives the
    logits of one process and the same greedy generate(). Pipeline parallel: the causal LM does; the other heads
    are refused with a message that says why."""
    out = tmp_path / "results.json"
    torchrun("inference", mode, models, out, nodes=2 if mode == "hsdp" else 1)
    results = json.loads(out.read_text())
    for head, result in results.items():
        if mode == "pp" and head != "causal":
            assert "has no pipeline-parallel plan" in result["error"] and "ScratchformerForCausalLM" in result["error"]
            continue
        assert result["max_logit_difference"] < 1e-5, (head, result)
        assert result["sharded"] == (mode != "pp"), (head, result)  # pipeline stages hold whole layers
        if "generate_equal" in result:
            assert result["generate_equal"], head


def test_requests_the_plans_cannot_serve_get_a_clear_error(models, tmp_path):
    out = tmp_path / "errors.json"
    torchrun("refusals", models, out)
    errors = json.loads(out.read_text())
    assert "num_attention_heads=3 is not divisible by tp_size=2" in errors["tp_size=2, 3 heads"]
    assert "WORLD_SIZE" in errors["fsdp_size=4 on 2 processes"] or "world" in errors["fsdp_size=4 on 2 processes"]
    assert "has no pipeline-parallel plan" in errors["pp_size=2, classifier"]


def test_fsdp_training_through_the_recipe_trainer_equals_one_process(models, tmp_path):
    """RecipeTrainer on a model sharded at load (DistributedConfig(fsdp_size=2)), 2 processes x 4 rows against one
    process x 8 rows: the same losses step by step, the same final weights, and the saved folder loads in one
    process."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    subprocess.run([sys.executable, str(WORKER), "train", models / "causal", one], check=True, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    torchrun("train", models / "causal", two)
    expected, losses = json.loads((one / "losses.json").read_text()), json.loads((two / "losses.json").read_text())
    assert len(losses) == len(expected) == 6
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    single = ScratchformerForCausalLM.from_pretrained(one / "model").state_dict()
    sharded = ScratchformerForCausalLM.from_pretrained(two / "model").state_dict()
    start = ScratchformerForCausalLM.from_pretrained(models / "causal").state_dict()
    assert not torch.equal(sharded["model.layers.0.attention.q_proj.weight"], start["model.layers.0.attention.q_proj.weight"])
    for name, tensor in single.items():
        torch.testing.assert_close(sharded[name], tensor, rtol=1e-4, atol=1e-5, msg=name)

"""transformers' own distributed engine (DistributedConfig: FSDP2, HSDP, tensor and pipeline parallel) on every head,
run for real: torchrun with gloo on CPU, 127.0.0.1, against the same folder in one process (tests/model/distributed_worker.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port

from scratchformer import (
    ScratchformerConfig,
    ScratchformerForCausalLM,
    ScratchformerForConditionalGeneration,
    ScratchformerForMaskedLM,
    ScratchformerForSequenceClassification,
)

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("distributed_worker.py")


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
    assert list(losses) == list(expected) == ["1", "2", "3", "4", "5", "6"]
    torch.testing.assert_close(torch.tensor(list(losses.values())), torch.tensor(list(expected.values())),
                               rtol=1e-5, atol=1e-5)
    single = ScratchformerForCausalLM.from_pretrained(one / "model").state_dict()
    sharded = ScratchformerForCausalLM.from_pretrained(two / "model").state_dict()
    start = ScratchformerForCausalLM.from_pretrained(models / "causal").state_dict()
    assert not torch.equal(sharded["model.layers.0.attention.q_proj.weight"], start["model.layers.0.attention.q_proj.weight"])
    for name, tensor in single.items():
        torch.testing.assert_close(sharded[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_a_sharded_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(models, tmp_path):
    """FSDP2 through RecipeTrainer, every process killed right after step 4's checkpoint, then resumed (weights into
    the shards, the sharded optimizer state, scheduler and RNG: training/distributed.py): the same losses and final
    weights as a run never interrupted. transformers' Trainer alone refuses to checkpoint such a run's optimizer."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    torchrun("train", models / "causal", whole)
    torchrun("train", models / "causal", killed, "--kill-after=4")
    assert not (killed / "model").exists()  # it died before the end
    checkpoint = killed / "trainer" / "checkpoint-4"
    assert (checkpoint / "optimizer-shards").is_dir() and (checkpoint / "rng_state_1.pth").is_file()
    torchrun("train", models / "causal", killed, "--resume")
    assert json.loads((killed / "losses.json").read_text()) == json.loads((whole / "losses.json").read_text())
    expected = ScratchformerForCausalLM.from_pretrained(whole / "model").state_dict()
    resumed = ScratchformerForCausalLM.from_pretrained(killed / "model").state_dict()
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name


def recipe(module: str, output: Path, *flags: str) -> subprocess.CompletedProcess:
    port = free_port()
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", module, "--preset", "tiny", "--max-train-samples", "200",
         "--max-test-samples", "50", "--output-dir", str(output), *flags],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        cwd=Path(__file__).resolve().parents[2], timeout=600,
    )


@pytest.mark.parametrize("module", ["training.lm", "training.classify"])
def test_a_recipe_trains_sharded_under_torchrun_and_publishes_from_one_process(module, tmp_path):
    """`torchrun --nproc_per_node 2 -m training.<recipe> --distributed fsdp=2` on real IMDb reviews: trained sharded,
    evaluated and published in one process; the folder loads and says how it was trained. Run again with --resume,
    the finished run is left as it is."""
    from transformers import AutoConfig

    output = tmp_path / "run"
    result = recipe(module, output, "--distributed", "fsdp=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["distributed"] == "fsdp=2"
    assert metrics["command"].startswith(f"torchrun --nproc_per_node 2 -m {module} ")
    checkpoint = max((output / "work").glob("*/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert (checkpoint / "optimizer-shards").is_dir()  # the sharded optimizer state, for --resume
    assert AutoConfig.from_pretrained(output, trust_remote_code=True).model_type == "scratchformer"
    published = (output / "model.safetensors").stat().st_mtime
    again = recipe(module, output, "--distributed", "fsdp=2", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (output / "model.safetensors").stat().st_mtime == published


@pytest.mark.parametrize("flag, message", [
    ("pp=2", "pipeline parallel runs inference only"),
    ("fsdp=3", "asks for 3 processes, but 1 were started"),
    ("shards=2", "expected NAME=SIZE"),
    pytest.param("tp=2", "refuses CPU processes", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CPU")),
])
def test_a_distributed_flag_the_run_cannot_honour_is_refused_before_anything_starts(flag, message, tmp_path, capsys):
    from training import lm

    with pytest.raises(SystemExit):
        lm.main(["--preset", "tiny", "--output-dir", str(tmp_path / "run"), "--distributed", flag])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

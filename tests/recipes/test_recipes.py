"""The IMDb recipes end to end on a tiny preset: outputs, resume after a kill, 2-process accelerate launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
from transformers.trainer_utils import get_last_checkpoint
from conftest import REPO_ROOT, kill_after_first_checkpoint, run_recipe

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


def recipe(name, output, data, *extra, wait=True):
    return run_recipe(name, output, "--data-source", str(data), *extra, wait=wait)


def test_classify_writes_a_hub_ready_folder(tmp_path, fake_aclimdb):
    output = tmp_path / "classify"
    result = recipe("classify", output, fake_aclimdb)
    assert "test accuracy" in result.stdout
    for name in ("model.safetensors", "config.json", "modeling_scratchformer.py", "tokenizer.json",
                 "metrics.json", "training_curve.png", "attention.png", "README.md"):
        assert (output / name).exists(), name
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["f1"] <= 1.0
    assert metrics["preset"] == "tiny" and metrics["wall_time_s"] > 0 and "CPU" in metrics["hardware"]
    assert metrics["test_samples"] == 80 and metrics["pretrained"] is True
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    labels = {r["label"] for r in pipeline("text-classification", model=str(output))(["a great film", "a dull story"])}
    assert labels <= {"NEGATIVE", "POSITIVE"}
    # A review longer than the model's 64 positions: the pipeline reads what the recipe's own encoding gives
    # (the whole review for the n-gram path, head + tail for the Transformer, cut by the saved model itself),
    # truncation or not.
    from training.classify import PRESETS, encode

    tiny = PRESETS["tiny"]
    review = " ".join(["a great film and wonderful acting"] * 12 + ["a dull story"] * 12)
    tokenizer, model = AutoTokenizer.from_pretrained(output), AutoModelForSequenceClassification.from_pretrained(output)
    assert config["ngram_buckets"] == tiny.ngram_buckets > 0
    assert model.ngram_logits.log_count_ratio.abs().sum() > 0  # fitted on the train reviews before training
    assert config["ngram_word_order"] == tiny.ngram_word_order > 0 and model.ngram_logits.word_pieces[:, 0].any()
    ids = encode(tokenizer, [review], tiny.max_length, tiny.head_tokens, whole=True)
    assert len(ids[0]) > tiny.max_length
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.softmax(-1)[0, 1].item()
    for truncation in (True, False):
        scores = pipeline("text-classification", model=str(output))(review, truncation=truncation, top_k=None)
        assert abs({s["label"]: s["score"] for s in scores}["POSITIVE"] - expected) < 1e-5


def test_lm_writes_perplexity_and_samples(tmp_path, fake_aclimdb):
    output = tmp_path / "lm"
    recipe("lm", output, fake_aclimdb)
    metrics = json.loads((output / "metrics.json").read_text())
    assert 1.0 < metrics["perplexity"] < 400  # the 379-token vocabulary bounds a trained model well below that
    assert 0 < metrics["bits_per_byte"] < 8 and metrics["test_tokens"] < metrics["test_bytes"]
    assert metrics["default_decoding"] in metrics["decoding_test"] and metrics["pipeline_tokens_per_s"] > 0
    for name in ("reviews", "greedy", "beam4", metrics["default_decoding"]):
        assert 0 <= metrics["decoding_test"][name]["known_word_share"] <= 1
    samples = json.loads((output / "samples.json").read_text())
    assert len(samples) == 5 and all(s["greedy"] and s["beam4"] and s["prompt"] for s in samples)
    saved = json.loads((output / "generation_config.json").read_text())
    assert all(saved.get(k, v) == v for k, v in metrics["default_decoding_settings"].items() if k != "do_sample")
    assert saved.get("do_sample", False) == metrics["default_decoding_settings"]["do_sample"]
    assert (saved["max_new_tokens"], saved["min_new_tokens"]) == (16, 4) and (output / "training_curve.png").exists()


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, fake_aclimdb):
    output = tmp_path / "run"
    (output / "work").mkdir(parents=True)
    (output / "metrics.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "training.classify", "--preset", "tiny", "--output-dir", str(output),
                             "--data-source", str(fake_aclimdb)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "--resume" in result.stderr
    assert (output / "metrics.json").read_text() == "{}"


def test_a_killed_run_resumes_to_the_same_final_weights(tmp_path, fake_aclimdb):
    straight = tmp_path / "straight"
    recipe("classify", straight, fake_aclimdb)

    killed = tmp_path / "killed"
    process = recipe("classify", killed, fake_aclimdb, wait=False)
    checkpoints = killed / "work" / "finetune"
    kill_after_first_checkpoint(process, checkpoints)
    assert not (killed / "model.safetensors").exists()  # it really stopped mid-way

    recipe("classify", killed, fake_aclimdb, "--resume")
    expected, resumed = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], msg=name)
    assert json.loads((killed / "metrics.json").read_text())["accuracy"] == json.loads((straight / "metrics.json").read_text())["accuracy"]


def test_accelerate_launch_with_two_cpu_processes_trains_and_saves_once(tmp_path, fake_aclimdb):
    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",  # without a GPU this is torchrun with gloo on CPU
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "training.classify", "--preset", "tiny", "--output-dir", str(output), "--data-source", str(fake_aclimdb)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy") == 1  # only the main process reports and saves
    metrics = json.loads((output / "metrics.json").read_text())
    assert "2 process(es)" in metrics["hardware"]
    # Each process saw half the batches: 2 epochs over 76 train reviews at batch 8 per process.
    last = Path(get_last_checkpoint(output / "work" / "finetune"))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 10


def test_set_changes_preset_values_with_their_types_and_refuses_unknown_keys(capsys):
    from training import cli
    from training.classify import PRESETS

    args = cli.parse_args("x", PRESETS, "out", ["--preset", "tiny", "--set", "epochs=3", "--set", "max_length=48",
                                                   "--set", "group_by_length=false", "--set", "optimizer=muon"])
    values = args.preset_values
    assert (values.epochs, values.max_length, values.group_by_length, values.optimizer) == (3.0, 48, False, "muon")
    assert values.hidden_size == PRESETS["tiny"].hidden_size  # untouched values stay the preset's
    for bad, message in [("epoch=3", "KEY one of"), ("max_length=long", "not a valid int"), ("bf16=maybe", "bool")]:
        with pytest.raises(SystemExit):
            cli.parse_args("x", PRESETS, "out", ["--set", bad])
        assert message in capsys.readouterr().err

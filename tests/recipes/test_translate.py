"""python -m training.translate end to end on the tiny preset: number words, a user's own TSV, resume after a kill."""

import json
from dataclasses import replace

import pytest
import torch
from huggingface_hub import metadata_load
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from conftest import kill_after_first_checkpoint, run_recipe

from training import translate

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


def translate_recipe(output, *extra, wait=True):
    return run_recipe("translate", output, *extra, wait=wait)


def test_number_words_recipe_writes_a_hub_ready_folder(tmp_path):
    output = tmp_path / "translate"
    result = translate_recipe(output)
    assert "test exact match greedy" in result.stdout
    for name in ("model.safetensors", "config.json", "modeling_scratchformer.py", "tokenizer.json",
                 "generation_config.json", "metrics.json", "samples.json", "training_curve.png", "attention.png"):
        assert (output / name).exists(), name
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("exact_match", "exact_match_greedy", "exact_match_beam4", "chrf", "chrf_greedy",
                "exact_match_below_10000_greedy", "exact_match_below_10000_beam4"):
        assert 0.0 <= metrics[key] <= 100.0, key
    assert metrics["preset"] == "tiny" and metrics["wall_time_s"] > 0 and "CPU" in metrics["hardware"]
    assert metrics["test_samples"] == 32 and metrics["task"] == "number words en->de"
    assert metrics["dataset"] == "num2words" and metrics["languages"] == ["en", "de"]
    card = metadata_load(output / "README.md")  # the model card describes a translation model
    assert card["pipeline_tag"] == "translation" and card["language"] == ["en", "de"]
    samples = json.loads((output / "samples.json").read_text())
    assert len(samples) == 5 and all({"source", "reference", "greedy", "beam4"} <= s.keys() for s in samples)
    config = json.loads((output / "config.json").read_text())
    assert config["is_encoder_decoder"] and config["auto_map"]["AutoModelForSeq2SeqLM"].endswith("ForConditionalGeneration")
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(output), AutoTokenizer.from_pretrained(output)
    inputs = tokenizer(["seventy-nine", "four thousand and twenty-one"], return_tensors="pt", padding=True)
    assert model.generate(**inputs).shape[0] == 2


def test_a_users_tsv_goes_through_the_same_code_path(tmp_path):
    words = ("red", "green", "blue", "small", "big", "cat", "dog", "car", "tree", "house", "bird", "old", "new")
    pairs = [(f"{a} {b} {c}", f"{c} {b} {a}") for a in words for b in words[:6] for c in words[5:8]]  # 234 pairs
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in pairs))
    output = tmp_path / "tsv"
    translate_recipe(output, "--data-source", str(tsv))
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["dataset"] == "pairs.tsv" and "languages" not in metrics and "hub_dataset" not in metrics
    assert metrics["task"] == str(tsv) and metrics["train_samples"] + metrics["validation_samples"] + metrics["test_samples"] == len(pairs)


def test_a_killed_run_resumes_to_the_same_final_weights(tmp_path):
    # Checkpoints every 5 of the 15 steps: killed after the first, 10 steps remain (a wide window to kill in).
    settings = ("--set", "save_steps=5")
    straight = tmp_path / "straight"
    translate_recipe(straight, *settings)

    killed = tmp_path / "killed"
    process = translate_recipe(killed, *settings, wait=False)
    checkpoints = killed / "work" / "train"
    kill_after_first_checkpoint(process, checkpoints)
    assert not (killed / "model.safetensors").exists()  # it really stopped mid-way
    assert not (checkpoints / "checkpoint-15").exists()  # ... before the end of training
    # Mark the checkpoint's log history (plots ignore an entry without loss or metric): a run that really goes on
    # from the checkpoint carries the mark into its final state, a run that starts over does not.
    state_file = max((c / "trainer_state.json" for c in checkpoints.glob("checkpoint-*") if (c / "checkpoint-complete.json").exists()),
                     key=lambda path: int(path.parent.name.split("-")[1]))
    state = json.loads(state_file.read_text())
    mark = {"step": state["global_step"], "resumed_from": state_file.parent.name}
    state["log_history"].append(mark)
    state_file.write_text(json.dumps(state))
    manifest = state_file.parent / "checkpoint-complete.json"  # an edit on purpose: keep the checkpoint whole
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), state_file.name: state_file.stat().st_size}))

    translate_recipe(killed, *settings, "--resume")
    assert mark in json.loads((checkpoints / "checkpoint-15" / "trainer_state.json").read_text())["log_history"]
    expected, resumed = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
    straight_metrics, killed_metrics = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    for key in ("exact_match_greedy", "exact_match_beam4", "chrf_greedy", "chrf_beam4"):
        assert killed_metrics[key] == straight_metrics[key], key
    assert json.loads((killed / "samples.json").read_text()) == json.loads((straight / "samples.json").read_text())


def test_splits_are_deterministic_and_disjoint():
    preset = replace(translate.PRESETS["tiny"], max_number=20_000, train_samples=2_000, test_samples=300)
    first = translate.number_words(preset, "de", seed=0, max_train_samples=None)
    again = translate.number_words(preset, "de", seed=0, max_train_samples=None)
    assert first["test"]["number"] == again["test"]["number"]
    assert not set(first["train"]["number"]) & set(first["test"]["number"])
    assert all(translate.split_of(str(n)) == "test" for n in first["test"]["number"])
    row = first["train"].filter(lambda r: r["number"] == 79)
    if len(row):
        assert row[0]["source"] == "seventy-nine" and row[0]["target"] == "neunundsiebzig"


def test_bad_parallel_text_gives_one_clear_error(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("one\teins\n\tzwei\n")
    with pytest.raises(ValueError, match="empty source or target"):
        translate.parallel_text(str(empty), seed=0, max_train_samples=None)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("one\teins\ntwo zwei\n")
    with pytest.raises(ValueError, match="line 2 is not"):
        translate.parallel_text(str(ragged), seed=0, max_train_samples=None)


def test_alignment_heat_map_is_written(tmp_path, tokenizer):
    from scratchformer import ScratchformerConfig, ScratchformerForConditionalGeneration

    config = ScratchformerConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=16, is_encoder_decoder=True,
                                 decoder_start_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    translate.plot_alignment(ScratchformerForConditionalGeneration(config), tokenizer, "a great film", tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000

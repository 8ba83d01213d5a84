"""Smoke tests of the benchmarks (`bench.speed`, `bench.speed_gpu`, `bench.accuracy.lm_budget`, `bench.translate`,
`bench.micro.attention_cpu`): each runs end to end on a tiny setting and writes complete results (no speed targets)."""

import json
import os
import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from bench.harness import use_threads

pytestmark = pytest.mark.timed  # timings and timeouts: alone, after the parallel suite (scripts/test.sh)

RATIO_KEYS = ("train_cls", "train_lm", "decode_greedy", "decode_beam4", "peak_mem", "mfu", "mfu_paired")


def leaves(value, path=""):
    """(path, number) for every number inside nested dicts."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, f"{path}.{key}")
    else:
        yield path, value


def test_quick_speed_benchmark_writes_every_ratio(tmp_path):
    out = tmp_path / "speed.json"
    # One thread: on a shared 2-core machine, two OpenMP threads stall whenever the other core is busy.
    command = [sys.executable, "-m", "bench.speed", "--quick", "--threads", "1", "--json", str(out)]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train_cls" in run.stdout and "noise" in run.stdout  # the table, with the noise floor column

    results = json.loads(out.read_text())
    assert set(results["sizes"]) == {"small", "large"}
    assert results["matmul_peak_gflops"] > 0
    for name, size in results["sizes"].items():
        for key in RATIO_KEYS:
            assert key in size, f"{name}: {key} missing"
        assert set(size["decode_greedy"]) == set(size["decode_beam4"]) == {"batch1", "batch8"}
        assert set(size["peak_mem"]) == {"cls", "lm"}
        for key in ("mfu", "mfu_paired"):
            assert set(size[key]) == {"train_cls", "train_lm"}
            assert all(set(sides) == {"ours", "theirs"} for sides in size[key].values())
        for key in (*RATIO_KEYS, "noise"):
            for path, number in leaves(size[key], f"{name}.{key}"):
                assert isinstance(number, (int, float)) and not isinstance(number, bool), path
                assert math.isfinite(number) and number > 0, f"{path} = {number}"


def test_quick_speed_benchmark_compiled_adds_both_compiled_comparisons(tmp_path):
    """--compile (with dynamo's 'eager' backend, to keep the test fast): training and greedy decoding get
    compiled/compiled and ours-compiled/theirs-eager ratios with their compile times; beam search stays eager."""
    out = tmp_path / "speed.json"
    command = [sys.executable, "-m", "bench.speed", "--quick", "--sizes", "small", "--threads", "1", "--compile",
               "--compile-backend", "eager", "--json", str(out)]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ours compiled/theirs eager" in run.stdout

    size = json.loads(out.read_text())["sizes"]["small"]
    for key in ("train_cls", "train_lm", "decode_greedy_b1", "decode_greedy_b8"):
        for suffix in ("_compiled", "_compiled_vs_eager"):
            c = size["details"][key + suffix]
            assert math.isfinite(c["ratio"]) and c["ratio"] > 0 and c["ours_tokens_per_s"] > 0, key + suffix
            assert c["compile_s"]["ours"] > 0 and (c["compile_s"]["theirs"] > 0) == (suffix == "_compiled")
    assert set(size["decode_greedy_compiled"]) == {"batch1", "batch8"} and "decode_beam4_b1_compiled" not in size["details"]
    assert set(size["mfu_compiled"]) == set(size["mfu_compiled_paired"]) == {"train_cls", "train_lm"}


def test_training_memory_counts_the_logits_and_gradient_our_loss_keeps_between_steps():
    """A warm step's profile no longer sees our LM's logits and d loss / d logits allocated (the loss keeps them from
    the step before), so the resident bytes must hold them: exactly two [batch x length, vocab] fp32 tensors more than
    the weights, AdamW state and batch; GPT-2 keeps none."""
    from bench import harness, models, speed

    size = models.QUICK_SIZES["small"]
    logits_bytes = size.batch_size * size.seq_len * size.vocab_size * 4
    for side, kept in (("ours", 2 * logits_bytes), ("theirs", 0)):
        model = models.build_model(side, "lm", size)
        batch = speed.training_batch(size, "lm")
        optimizer = speed.make_optimizer(model)
        speed.training_step(model, batch, optimizer)()
        state = [t for s in optimizer.state.values() for t in s.values()]
        plain = harness.tensor_bytes([*model.parameters(), *model.buffers(), *state, *batch.values()])
        assert harness.resident_bytes(model, optimizer, batch) == plain + kept, side


def test_quick_gpu_speed_benchmark_runs_on_cpu_and_records_the_loss_path(tmp_path):
    """bench.speed_gpu --quick takes its GPU code paths on CPU when there is no GPU (eager here, to stay fast): every
    comparison with both sides' tokens/s, MFU and step memory, and which loss ours' LM took on that device."""
    from bench import speed_gpu

    out = tmp_path / "g.json"
    assert speed_gpu.main(["--quick", "--sizes", "small", "--pairs", "1", "--no-compile", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["complete"] and results["torch"] == torch.__version__ and results["device"]["name"]
    size = results["sizes"]["small"]
    comparisons = size["comparisons"]
    assert set(comparisons) == {"train_cls", "train_lm", "decode_greedy_b1", "decode_greedy_b8"}
    for key, c in comparisons.items():
        for number in (c["ours_tokens_per_s"], c["theirs_tokens_per_s"], c["ratio"], c["noise"]):
            assert math.isfinite(number) and number > 0, key
    for key in ("train_cls", "train_lm"):
        assert all(comparisons[key]["mfu"][side] > 0 for side in ("ours", "theirs"))
        assert all(comparisons[key]["memory"][side]["total_bytes"] > 0 for side in ("ours", "theirs"))
    # the chunked loss is a CPU path: taken on CPU, never on CUDA
    path = size["loss_path"]
    assert path["checks"] >= 1 and path["fused_loss_applies"] is (results["device"]["type"] == "cpu")


def test_lm_compiled_vs_eager_pairs_ours_compiled_with_gpt2_eager(tmp_path):
    """bench.lm_compiled_vs_eager (the LM's one edge target on its own): a compiled step of ours against GPT-2 eager,
    with GPT-2 against itself as the noise floor, written with both sides' tokens/s and the compile time."""
    from bench import lm_compiled_vs_eager

    out = tmp_path / "lm.json"
    assert lm_compiled_vs_eager.main(["--quick", "--size", "small", "--pairs", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["size"] == "small" and report["compile_s"] > 0 and report["calls_per_sample"] >= 1
    for key in ("ratio", "noise", "ours_tokens_per_s", "theirs_tokens_per_s"):
        assert math.isfinite(report[key]) and report[key] > 0, key


def test_paired_mfu_of_the_peaks_own_matmul_is_near_one():
    """A 'model' that is the peak's own matmul runs at about the peak: the per-pair ratios count every call's FLOPs
    against a peak sample taken next to it (best-of-bursts peak, so at most a little above 1)."""
    from bench.harness import Protocol, paired_mfu

    threads = torch.get_num_threads()
    use_threads(1)  # steadier on a shared machine; the rest of the suite gets its thread count back
    try:
        n = 256
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        result = paired_mfu(lambda: torch.mm(a, b, out=out), 2 * n**3, calls=20,
                            protocol=Protocol(pairs=4, sample_seconds=0.05), peak_sizes=(n,))
    finally:
        use_threads(threads)
    assert len(result["pair_ratios"]) == 4
    assert 0.4 < result["mfu"] <= 1.2, result


def test_lm_budget_trains_both_models_for_the_same_budget(tmp_path, fake_aclimdb):
    out = tmp_path / "lm.json"
    command = [sys.executable, "-m", "bench.accuracy.lm_budget", "--preset", "tiny", "--data-source", str(fake_aclimdb),
               "--output-dir", str(tmp_path / "run"), "--budget-s", "1", "--grid-budget-s", "0.5",
               "--learning-rates", "1e-3,1e-2", "--json", str(out)]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "bits per byte ratio" in run.stdout

    report = json.loads(out.read_text())
    assert report["ours"]["model"] == "ScratchformerForCausalLM" and report["theirs"]["model"] == "GPT2LMHeadModel"
    # Same dimensions on both sides: the parameter counts differ only by GPT-2's biases and LayerNorm layout.
    assert abs(report["ours"]["num_parameters"] / report["theirs"]["num_parameters"] - 1) < 0.05
    for side in ("ours", "theirs"):
        assert report[side]["steps"] >= 1 and report[side]["train_s"] > 0
        assert 1.0 < report[side]["perplexity"] < 1000  # a 400-token vocabulary bounds a barely trained model
        # each side trained at the grid's rate with the lowest validation bits per byte
        grid = report["grid"][side]
        assert set(grid) == {"0.001", "0.01"} and f"{report[side]['learning_rate']:g}" == min(grid, key=grid.get)
    assert math.isclose(report["ratio"], report["ours"]["bits_per_byte"] / report["theirs"]["bits_per_byte"])


def test_quick_translation_benchmark_writes_speed_and_accuracy(tmp_path):
    out = tmp_path / "translate.json"
    command = [sys.executable, "-m", "bench.translate", "--quick", "--threads", "1", "--train-samples", "300",
               "--test", "20", "--budget-s", "1", "--learning-rates", "2e-3,1e-3", "--compile", "--compile-backend",
               "eager", "--json", str(out)]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ours/BART" in run.stdout and "exact match" in run.stdout and "train_compiled_vs_eager" in run.stdout

    results = json.loads(out.read_text())
    assert results["train_compiled"]["compile_s"]["theirs"] > 0 == results["train_compiled_vs_eager"]["compile_s"]["theirs"]
    for name in ("train", "train_compiled", "train_compiled_vs_eager", "beam4"):
        for key in ("ratio", "noise", "ours_tokens_per_s", "theirs_tokens_per_s"):
            assert math.isfinite(results[name][key]) and results[name][key] > 0, f"{name}.{key}"
    assert 0 < results["train"]["padding_share"] < 1  # real batches of different lengths
    runs = results["accuracy_by_learning_rate"]
    rates = [(run["ours"]["learning_rate"], run["theirs"]["learning_rate"]) for run in runs]
    assert rates == [(2e-3, 2e-3), (1e-3, 1e-3)]
    for side in ("ours", "theirs"):
        for run in runs:
            row = run[side]
            assert row["steps"] >= 1 and row["train_tokens_per_s"] > 0
            assert 0 <= row["greedy"]["exact_match"] <= 1 and 0 <= row["beam4"]["exact_match"] <= 1
        best = max(run[side]["beam4"]["exact_match"] for run in runs)
        assert results["accuracy"][side]["beam4"]["exact_match"] == best  # each side at its best rate


def test_thread_count_is_set_only_to_change_it(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    use_threads(None)
    use_threads(torch.get_num_threads())  # re-setting the same count would slow CPU SDPA: skipped
    assert calls == []
    use_threads(torch.get_num_threads() + 1)
    assert calls == [torch.get_num_threads() + 1]


def test_attention_microbenchmark_times_both_attentions_in_both_thread_settings(tmp_path):
    out = tmp_path / "attention.json"
    command = [sys.executable, "-m", "bench.micro.attention_cpu", "--lengths", "4,8", "--batch-heads", "8",
               "--seconds", "0.01", "--json", str(out)]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    for setting in ("default", "set_num_threads"):
        assert [row["length"] for row in results[setting]] == [4, 8]
        for row in results[setting]:
            for key in ("sdpa_forward_us", "eager_forward_us", "sdpa_train_us", "eager_train_us"):
                assert math.isfinite(row[key]) and row[key] > 0, f"{setting}.{key}"


def test_output_layer_microbenchmark_times_every_layout(tmp_path):
    from bench.micro import output_layer_cpu

    out = tmp_path / "output_layer.json"
    assert output_layer_cpu.main(["--rows", "1,8", "--hidden", "16", "--vocab", "64", "--repeats", "1",
                                  "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [(row["hidden"], row["rows"]) for row in results] == [(16, 1), (16, 8)]
    for row in results:
        assert row["linear"] > 0 and row["weight_first"] > 0 and row["compiled_sum"] > 0
        assert row["speedup"] == pytest.approx(row["linear"] / row["weight_first"])
        assert row["onednn"] > 0 and row["onednn_speedup"] == pytest.approx(row["linear"] / row["onednn"])
        assert row["compiled_sum_speedup"] == pytest.approx(row["linear"] / row["compiled_sum"])


def test_linear_cross_entropy_microbenchmark_times_both_ways_and_restores_the_chunk_size(tmp_path):
    from bench.micro import linear_cross_entropy as bench_lce

    import scratchformer.linear_cross_entropy as chunked

    default = chunked.CHUNK_ELEMENTS
    out = tmp_path / "lce.json"
    assert bench_lce.main(["--rows", "64", "--hidden", "16", "--vocab", "50", "--chunk-rows", "8,64", "--pairs", "1",
                           "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(row["hidden"], row["chunk_rows"]) for row in report["results"]] == [(16, 8), (16, 64)]
    for row in report["results"]:
        assert row["plain_ms"] > 0 and row["chunked_ms"] > 0 and row["speedup"] > 0
    assert chunked.CHUNK_ELEMENTS == default


def test_ngram_screen_ranks_settings_on_held_out_train_folds(tmp_path, fake_aclimdb, tokenizer):
    from bench.accuracy import ngram_screen

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    # 76 reviews make 2 batches an epoch: more epochs and a higher rate than the recipe, so the path can learn them
    results = ngram_screen.main(["--tokenizer", str(tmp_path / "tokenizer"), "--data-source", str(fake_aclimdb),
                                 "--settings", "1:4096", "2:4096", "--folds", "2", "--epochs", "20", "--lr", "0.05"])
    assert [(r["order"], r["buckets"]) for r in results] == [(1, 4096), (2, 4096)]
    for result in results:
        # two fifths of the 76 train reviews (80 minus the 5 % validation split) are held out and scored
        assert 28 <= result["held_out"] <= 32
        assert result["accuracy"] >= 0.9  # the fake reviews' labels follow their wording: the path must learn it

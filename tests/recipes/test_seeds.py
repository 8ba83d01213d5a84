"""`python -m training.seeds`: one recipe command over several seeds, summarised as mean ± standard deviation with
the baselines of the same runs; a finished seed is not run again."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from training import seeds

pytestmark = pytest.mark.slow  # whole recipe runs: skipped by -m "not slow"


def test_seeds_run_once_each_and_summarise_mean_and_spread(tmp_path, fake_aclimdb):
    output = tmp_path / "seeds"
    command = [sys.executable, "-m", "training.seeds", "classify", "--seeds", "0", "1", "--output-dir", str(output),
               "--preset", "tiny", "--data-source", str(fake_aclimdb), "--set", "pretrain_epochs=0"]
    env = {"HF_HUB_OFFLINE": "1", "PATH": "", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())
    runs = {seed: json.loads((output / f"seed-{seed}" / "metrics.json").read_text()) for seed in (0, 1)}
    assert [run["seed"] for run in runs.values()] == [0, 1]
    accuracy = summary["figures"]["accuracy"]
    assert accuracy["per_seed"] == {"0": runs[0]["accuracy"], "1": runs[1]["accuracy"]}
    assert accuracy["mean"] == pytest.approx((runs[0]["accuracy"] + runs[1]["accuracy"]) / 2)
    assert summary["figures"]["nbsvm-bi"]["mean"] == pytest.approx(
        (runs[0]["baselines"]["nbsvm-bi"]["accuracy"] + runs[1]["baselines"]["nbsvm-bi"]["accuracy"]) / 2)
    assert "validation_accuracy" in summary["figures"] and "every_seed_beats_nbsvm_bi" in summary
    assert "accuracy:" in first.stdout and "±" in first.stdout
    # Each seed's folder carries the summary: in metrics.json and in its model card.
    for seed in (0, 1):
        over_seeds = json.loads((output / f"seed-{seed}" / "metrics.json").read_text())["over_seeds"]
        assert over_seeds["seed"] == seed and over_seeds["figures"]["accuracy"]["mean"] == pytest.approx(accuracy["mean"])
        assert f"this model is seed {seed})" in (output / f"seed-{seed}" / "README.md").read_text()
    # Run again: both seeds are complete, so nothing trains; the summary is the same.
    stamps = [(output / f"seed-{seed}" / "model.safetensors").stat().st_mtime_ns for seed in (0, 1)]
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "$ " not in again.stdout
    assert [(output / f"seed-{seed}" / "model.safetensors").stat().st_mtime_ns for seed in (0, 1)] == stamps
    assert json.loads((output / "summary.json").read_text())["figures"] == summary["figures"]


def test_the_flags_seeds_sets_itself_are_refused():
    with pytest.raises(SystemExit, match="--seed is set by training.seeds"):
        seeds.main(["classify", "--output-dir", "x", "--seed", "3"])


def test_one_seed_has_no_spread(tmp_path):
    folder = tmp_path / "seed-0"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"bits_per_byte": 1.7, "validation_bits_per_byte": 1.8,
                                                     "wall_time_s": 60.0, "command": "python -m training.lm"}))
    summary = seeds.summarise("lm", {0: folder})
    assert summary["figures"]["bits_per_byte"] == {"per_seed": {0: 1.7}, "mean": 1.7, "std": 0.0}

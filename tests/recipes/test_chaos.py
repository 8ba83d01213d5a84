"""Chaos: each recipe, SIGKILLed at seeded random moments (one in each phase, then at random delays) and resumed
after each kill, ends with the uninterrupted run's weights (bit for bit) and metrics; a truncated newest
checkpoint is skipped with a warning; a folder killed while it is being written never looks complete."""

import signal
import time

import pytest

from training.chaos import chaos, differences, start

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


RECIPES = {  # name: (recipe, its flags: tiny preset, small data)
    # ELECTRA's pre-training: two models in one checkpoint, and the generator's samples drawn from the RNG that a
    # resumed run restores. The masked LM trains through the same phase (the tiny preset's own pre-training).
    "classify": ("classify", ["--preset", "tiny", "--pretrain", "electra"]),
    "classify-lm-pretraining": ("classify", ["--preset", "tiny", "--pretrain", "lm"]),
    "lm": ("lm", ["--preset", "tiny"]),
    "translate": ("translate", ["--preset", "tiny"]),
}
TRAINING_PHASES = {"classify": {"pretrain", "finetune"}, "lm": {"train"}, "translate": {"train"}}


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_killed_at_random_moments_resumes_to_the_uninterrupted_result(name, tmp_path, fake_aclimdb):
    recipe, flags = RECIPES[name]
    args = flags + ([] if recipe == "translate" else ["--data-source", str(fake_aclimdb)])
    report = chaos(recipe, tmp_path, args, kills=10, seed=0, log=lambda line: None)
    assert report["problems"] == []
    assert report["kills"] >= 10
    assert TRAINING_PHASES[recipe] | {"publish"} <= set(report["phases"]), report["phases"]  # incl. the final save
    assert report["truncated"] and report["fell_back"]


def test_a_run_killed_in_its_second_epoch_resumes_to_identical_weights(tmp_path, fake_aclimdb):
    """group_by_length's batch order after a resume mid-way through epoch 2 (transformers draws it from the global
    RNG, which a resumed run holds in another state there: every weight and the accuracy differed)."""
    args = ["--preset", "tiny", "--data-source", str(fake_aclimdb), "--set", "pretrain_epochs=0"]
    reference, output = tmp_path / "reference", tmp_path / "killed"
    assert start("classify", reference, args, False, tmp_path / "reference.log").wait() == 0
    process = start("classify", output, args, False, tmp_path / "killed.log")
    # 10 steps an epoch, a checkpoint every 4: checkpoint-12 is 2 steps into the second epoch.
    deadline = time.time() + 300
    while not (output / "work" / "finetune" / "checkpoint-12" / "checkpoint-complete.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before checkpoint-12"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert start("classify", output, args, True, tmp_path / "resumed.log").wait() == 0
    assert differences(reference, output) == []

"""The pieces that make a killed run resume exactly: whole checkpoints only, a seeded batch order, atomic files."""

import json

import torch
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from training import resume


def checkpoint(folder, step, tensors=None):
    """A checkpoint folder as the Trainer writes it, made whole by the CheckpointManifest callback."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file(tensors or {"w": torch.arange(6.0)}, path / "model.safetensors")
    torch.save({"step": step}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    state = TrainerState(global_step=step)
    resume.CheckpointManifest().on_save(TrainingArguments(output_dir=str(folder), report_to=[]), state, TrainerControl())
    return path


def same_size(path, data: bytes) -> None:
    """Overwrite a file with other bytes of the same length (damage a size check alone would miss)."""
    path.write_bytes(data[: path.stat().st_size].ljust(path.stat().st_size, b" "))


def test_a_whole_checkpoint_passes_and_each_kind_of_damage_is_named(tmp_path):
    assert resume.checkpoint_problem(checkpoint(tmp_path, 4)) is None
    cases = {
        "no complete manifest": lambda p: (p / resume.MANIFEST).unlink(),
        "model.safetensors is missing or not": lambda p: (p / "model.safetensors").write_bytes(b"x" * 10),
        "trainer_state.json is corrupt": lambda p: same_size(p / "trainer_state.json", b"{"),
        "optimizer.pt is corrupt": lambda p: same_size(p / "optimizer.pt", b"not a zip archive"),
        "model.safetensors is corrupt": lambda p: same_size(p / "model.safetensors", b"\xff" * 8),
    }
    for step, (expected, damage) in enumerate(cases.items(), start=10):
        path = checkpoint(tmp_path, step)
        damage(path)
        assert expected in (resume.checkpoint_problem(path) or ""), (expected, resume.checkpoint_problem(path))


def test_safetensors_whose_tensors_do_not_fill_the_file_are_caught(tmp_path):
    path = checkpoint(tmp_path, 2)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-8])  # the header still promises the last 8 bytes of data
    sizes = json.loads((path / resume.MANIFEST).read_text())
    (path / resume.MANIFEST).write_text(json.dumps({**sizes, "model.safetensors": len(data) - 8}))
    assert "do not fill the file" in resume.checkpoint_problem(path)


def test_the_newest_bad_checkpoint_is_reported_removed_and_the_one_before_used(tmp_path, capsys):
    checkpoint(tmp_path, 4)
    newest = checkpoint(tmp_path, 8)
    with open(newest / "model.safetensors", "r+b") as f:
        f.truncate(20)
    (tmp_path / "checkpoint-12").mkdir()  # a kill mid-save: no manifest yet
    assert resume.last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not newest.exists() and not (tmp_path / "checkpoint-12").exists()
    assert resume.last_complete_checkpoint(tmp_path / "nothing") is None


def test_group_by_length_order_depends_on_seed_and_epoch_only():
    lengths = list(range(5, 105))

    def order(epoch, seed=0):
        sampler = resume.EpochSeededLengthGroupedSampler(4, lengths=lengths, seed=seed)
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch * 7 + 3)  # whatever the global RNG holds
        return list(sampler)

    assert order(1) == order(1) and sorted(order(1)) == list(range(100))
    assert order(1) != order(2) and order(1) != order(1, seed=1)


def test_stopwatch_survives_a_torn_file(tmp_path):
    (tmp_path / resume.WORK).mkdir()
    (tmp_path / resume.WORK / "elapsed_s.txt").write_text("")  # what a kill mid-write used to leave
    stopwatch = resume.Stopwatch(tmp_path)
    assert stopwatch.before == 0.0 and stopwatch.total() >= 0.0
    assert float((tmp_path / resume.WORK / "elapsed_s.txt").read_text()) >= 0.0

"""Shared fixtures: a tiny corpus, a tokenizer trained on it, and tiny model configs."""

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from contextlib import contextmanager

import pytest
import torch

from scratchformer import ScratchformerConfig, train_tokenizer

# scripts/test.sh runs the suite on one pytest-xdist worker per core: each worker (and every process it starts,
# through the environment) keeps to one thread, since two OpenMP threads stall whenever the other core is busy.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--timed-only", action="store_true",
                     help="run only the tests marked `timed` (scripts/test.sh runs them alone, after the others)")


def pytest_collection_modifyitems(config, items):
    """`timed` tests (benchmarks with timeouts, paired timings) never run beside another worker: scripts/test.sh
    runs them alone with --timed-only once the parallel run is over."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        wanted_timed = False
    elif config.getoption("--timed-only"):
        wanted_timed = True
    else:
        return
    keep, drop = [], []
    for item in items:
        (keep if (item.get_closest_marker("timed") is not None) == wanted_timed else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep

POSITIVE = ["a great film", "wonderful acting and a moving story", "i loved every minute", "brilliant and funny"]
NEGATIVE = ["a terrible film", "boring acting and a dull story", "i hated every minute", "awful and tedious"]


def sentiment_corpus(n: int = 64, seed: int = 0) -> tuple[list[str], list[int]]:
    """Short reviews whose label is decided by their wording (a task a tiny model can learn in seconds)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        phrase = rng.choice(POSITIVE if label else NEGATIVE)
        texts.append(f"{rng.choice(['honestly', 'overall', 'so', 'well'])} {phrase}.")
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return sentiment_corpus(200)[0] + ["The quick brown fox jumps over the lazy dog.\nNew line, ünïcode ✓"]


@pytest.fixture(scope="session")
def tokenizer(corpus):
    return train_tokenizer(corpus, vocab_size=400, min_frequency=1, model_max_length=64)


def tiny_config(vocab_size: int = 400, **overrides) -> ScratchformerConfig:
    """A 2-layer, 32-wide model: fast enough for exact comparisons in unit tests."""
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    settings.update(overrides)
    return ScratchformerConfig(**settings)


def train_briefly(model, tokenizer, texts, labels=None, steps=40):
    """A few steps of plain AdamW on `texts` (classification with `labels`, else language modelling), so a saved
    tiny model has something real to show."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    targets = torch.tensor(labels) if labels is not None else batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    for _ in range(steps):
        model(**batch, labels=targets).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def assert_one_step_trains(model, loss, parts) -> None:
    """One Muon + AdamW step (the recipes' pre-training optimizer) on `loss` moves some weight under each name prefix
    in `parts`."""
    from training.optimizers import MuonWithAdamW

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = MuonWithAdamW(model, 1e-2, 0.0)
    loss.backward()
    optimizer.step()
    for part in parts:
        moved = [not torch.equal(p, before[name]) for name, p in model.named_parameters() if name.startswith(part)]
        assert moved and any(moved), part


def assert_saved_alone(save, folder, kept):
    """save(folder) writes the module `kept` alone, as a ScratchformerModel folder that reloads equal; its config."""
    from scratchformer import ScratchformerModel

    save(folder)
    saved = ScratchformerModel.from_pretrained(folder)
    for name, weight in saved.state_dict().items():
        assert torch.equal(weight, kept.state_dict()[name]), name
    return saved.config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_fake_aclimdb(root, per_class: int = 40, seed: int = 0):
    """A tiny folder in the Stanford aclImdb layout whose labels follow the wording."""
    rng = random.Random(seed)
    filler = "the plot follows a family in a small town and the camera work is fine".split()
    for split in ("train", "test"):
        for label, phrases in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                text = f"{' '.join(rng.sample(filler, 6))}. {rng.choice(phrases)}.<br /><br />{' '.join(rng.sample(filler, 4))}."
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(text)
    return root


@pytest.fixture(scope="session")
def fake_aclimdb(tmp_path_factory):
    return write_fake_aclimdb(tmp_path_factory.mktemp("data") / "aclImdb")


def kill_after_first_checkpoint(process, checkpoints, timeout_s: float = 300) -> None:
    """SIGKILL a recipe subprocess as soon as its first complete checkpoint (one with its manifest, written last)
    appears in `checkpoints`."""
    deadline = time.time() + timeout_s
    while not any((c / "checkpoint-complete.json").exists() for c in checkpoints.glob("checkpoint-*")):
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_recipe(name, output, *extra, wait=True):
    """`python -m training.<name> --preset tiny --output-dir output *extra` from the checkout, offline.

    Waits and asserts success (returning the completed process), or with wait=False returns the running Popen."""
    command = [sys.executable, "-m", f"training.{name}", "--preset", "tiny", "--output-dir", str(output), *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if not wait:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def refused_classify_run(output, *flags) -> str:
    """A tiny `training.classify` run into `output` on 50 reviews that must fail: the last line of its error.
    Offline and with no PATH, so that a refusal never waits on the network."""
    result = subprocess.run([sys.executable, "-m", "training.classify", "--preset", "tiny", "--output-dir", str(output),
                             "--max-train-samples", "50", *flags],
                            cwd=REPO_ROOT, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode != 0
    return result.stderr.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The start of a child process's script that must load saved folders as remote code: hide the (editable) install of
# scratchformer and prove it is gone. The script's own text follows it.
WITHOUT_SCRATCHFORMER = textwrap.dedent(
    """
    import os, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "scratchformer" not in type(f).__module__ + repr(f)]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != REPO_ROOT]
    try:
        import scratchformer
        raise SystemExit("scratchformer is still importable: the test would prove nothing")
    except ImportError:
        pass
    """
).replace("REPO_ROOT", repr(REPO_ROOT))


@contextmanager
def running_server(folder, log_path, *flags):
    """`python -m scratchformer.serve folder *flags` on a free 127.0.0.1 port, until it answers /health."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "scratchformer.serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
             "--device", "cpu", *flags],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.time() < deadline, "the server did not answer /health in 120 s"
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)

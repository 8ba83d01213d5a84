"""Upload -> download -> use round trip through a local, offline Hub (olah + upload server on 127.0.0.1)."""

# Uploads run in this process (HfApi bound to the fixture's endpoint, and `python -m hub_card.publish`);
# downloads run in fresh child processes with an empty HF_HOME, where the scratchformer package cannot be
# imported, so trust_remote_code has to use the code that travelled with the weights.

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hub_fixture import REPO_ROOT, hub, hub_server  # noqa: F401  (pytest fixtures)
from huggingface_hub.errors import HfHubHTTPError

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


RESULT_MARK = "@@RESULT@@"
# Runs first in every child: make the editable-installed scratchformer (and anything under the repo) unimportable.
CHILD_PRELUDE = textwrap.dedent("""\
    import json, os, sys
    _root = os.path.realpath(os.environ["HUB_TEST_REPO_ROOT"])
    _prefix = os.path.realpath(sys.prefix)  # the venv may live inside the repo: keep its site-packages
    def _under(path, folder):
        return path == folder or path.startswith(folder + os.sep)
    def _in_repo(entry):
        path = os.path.realpath(entry or os.getcwd())
        return _under(path, _root) and not _under(path, _prefix)
    sys.path[:] = [p for p in sys.path if "__editable__" not in p and not _in_repo(p)]
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
    sys.path_importer_cache.clear()
    try:
        import scratchformer
    except ImportError:
        pass
    else:
        raise SystemExit(f"scratchformer is still importable in the child: {scratchformer.__file__}")
    def emit(**values):
        print("@@RESULT@@" + json.dumps(values), flush=True)
    """)


def run_child(hub, code: str, hf_home: Path, cwd: Path, **spec) -> dict:
    """Run `code` in a fresh interpreter talking only to the test Hub; return what it emit()-ted."""
    env = hub.env(hf_home)
    env.pop("PYTHONPATH", None)
    env.update(HUB_TEST_REPO_ROOT=str(REPO_ROOT), HUB_TEST_SPEC=json.dumps(spec), OMP_NUM_THREADS="1")
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"child failed ({result.returncode}):\n{result.stderr[-6000:]}\n{hub.logs()}")
    values: dict = {}
    for line in result.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            values.update(json.loads(line[len(RESULT_MARK):]))
    return values


# ----------------------------------------------------------------------------------------------------------
# 1. The fixture itself, with plain huggingface_hub
# ----------------------------------------------------------------------------------------------------------

PLAIN_CHILD = """
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
spec = json.loads(os.environ["HUB_TEST_SPEC"])
repo, old_sha = spec["repo"], spec["old_sha"]
def error_name(fn):
    try:
        fn()
    except Exception as err:
        return type(err).__name__
    return None
emit(
    snapshot=snapshot_download(repo),
    at_old_sha=hf_hub_download(repo, "notes.txt", revision=old_sha),
    main_sha=HfApi().model_info(repo).sha,
    files=sorted(HfApi().list_repo_files(repo)),
    missing_repo=error_name(lambda: hf_hub_download("nobody/no-such-repo", "config.json")),
    missing_file=error_name(lambda: hf_hub_download(repo, "no-such-file.txt")),
    bad_revision=error_name(lambda: hf_hub_download(repo, "notes.txt", revision="no-such-branch")),
)
"""


def test_plain_upload_then_download_in_a_fresh_process(hub, tmp_path):
    api = hub.api()
    repo = "fixture-user/plain-files"
    assert api.create_repo(repo) == f"{hub.endpoint}/{repo}"
    assert api.create_repo(repo, exist_ok=True) == f"{hub.endpoint}/{repo}"
    with pytest.raises(HfHubHTTPError):
        api.create_repo(repo)  # 409 without exist_ok, like the Hub

    folder = tmp_path / "upload"
    (folder / "nested").mkdir(parents=True)
    (folder / "notes.txt").write_text("first version\nünïcode ✓\n", encoding="utf-8")
    (folder / "weights.bin").write_bytes(random.Random(0).randbytes(300_000) + b"\0" * 1000)
    (folder / "nested" / "config.json").write_text('{"a": 1}')
    first = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="first upload")

    hf_home = tmp_path / "hf_home_child"
    got = run_child(hub, PLAIN_CHILD, hf_home, tmp_path / "cwd", repo=repo, old_sha=first.oid)
    snapshot = Path(got["snapshot"])
    for path in ("notes.txt", "weights.bin", "nested/config.json"):
        assert (snapshot / path).read_bytes() == (folder / path).read_bytes(), path
    assert got["main_sha"] == first.oid
    assert got["files"] == [".gitattributes", "nested/config.json", "notes.txt", "weights.bin"]
    assert Path(got["at_old_sha"]).read_text(encoding="utf-8") == "first version\nünïcode ✓\n"
    assert got["missing_repo"] == "RepositoryNotFoundError"
    assert got["missing_file"] in ("RemoteEntryNotFoundError", "EntryNotFoundError")
    assert got["bad_revision"] == "RevisionNotFoundError"

    # A second commit (one change, one deletion) is seen by a client whose cache holds the first one.
    api.upload_file(path_or_fileobj=b"second version\n", path_in_repo="notes.txt", repo_id=repo)
    second = api.delete_file("nested/config.json", repo_id=repo, commit_message="drop nested config")
    got = run_child(hub, PLAIN_CHILD, hf_home, tmp_path / "cwd", repo=repo, old_sha=first.oid)
    snapshot = Path(got["snapshot"])
    assert (snapshot / "notes.txt").read_text() == "second version\n"
    assert not (snapshot / "nested" / "config.json").exists()
    assert got["main_sha"] == second.oid
    # An old sha still serves the old bytes.
    assert Path(got["at_old_sha"]).read_text(encoding="utf-8") == "first version\nünïcode ✓\n"

    history = subprocess.run(["git", "--git-dir", str(hub.git_dir(repo)), "log", "--format=%s", "main"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert history[-1] == "initial commit" and history[0] == "drop nested config" and len(history) == 4


# ----------------------------------------------------------------------------------------------------------
# 2. scratchformer models: publish with hub_card, use with trust_remote_code where the package is absent
# ----------------------------------------------------------------------------------------------------------

POSITIVE = ["a great film", "wonderful acting", "i loved it", "brilliant and funny", "a moving story"]
NEGATIVE = ["a terrible film", "boring acting", "i hated it", "dull and tedious", "an awful story"]
PROBE_TEXTS = ["honestly a great film .", "so boring acting and an awful story", "i loved it"]
PROMPT = "honestly a"
NEW_TOKENS = 6


def _corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        texts.append(f"{rng.choice(['honestly', 'overall', 'so', 'well'])} {rng.choice(POSITIVE if label else NEGATIVE)} .")
        labels.append(label)
    return texts, labels


def _config(tokenizer, **extra):
    from scratchformer import ScratchformerConfig

    return ScratchformerConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


def _train(model, batch: dict, steps: int) -> None:
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()


def _local_outputs(classifier, lm, tokenizer) -> dict:
    """What the in-process models answer to the probes (the reference the downloaded models must match)."""
    import torch
    from transformers import pipeline

    enc = tokenizer(PROBE_TEXTS, padding=True, return_tensors="pt")
    prompt = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        cls_logits = classifier(**enc).logits
        lm_logits = lm(**prompt).logits
    generated = lm.generate(**prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    # Copies: the text-generation pipeline switches its tokenizer to left padding, which would leak into later probes.
    clf = pipeline("text-classification", model=classifier, tokenizer=copy.deepcopy(tokenizer))
    gen = pipeline("text-generation", model=lm, tokenizer=copy.deepcopy(tokenizer))
    return {
        "cls_logits": cls_logits.tolist(),
        "cls_pipeline": clf(PROBE_TEXTS, truncation=True),
        "lm_logits": lm_logits.tolist(),
        "lm_generated": generated[0].tolist(),
        "lm_pipeline": gen(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)[0]["generated_text"],
    }


MODEL_CHILD = """
import torch
from huggingface_hub import hf_hub_download
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline
spec = json.loads(os.environ["HUB_TEST_SPEC"])
cls_repo, lm_repo, texts, prompt, new_tokens = spec["cls_repo"], spec["lm_repo"], spec["texts"], spec["prompt"], spec["new_tokens"]
torch.set_num_threads(1)

def classify(revision=None):
    tok = AutoTokenizer.from_pretrained(cls_repo, revision=revision, trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(cls_repo, revision=revision, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits
    return type(model).__module__, logits.tolist()

def generate(revision=None):
    tok = AutoTokenizer.from_pretrained(lm_repo, revision=revision, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(lm_repo, revision=revision, trust_remote_code=True).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    ids = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False)
    return type(model).__module__, logits.tolist(), ids[0].tolist()

out = {}
out["cls_module"], out["cls_logits"] = classify()
out["cls_pipeline"] = pipeline("text-classification", model=cls_repo, trust_remote_code=True)(texts, truncation=True)
_, out["cls_old_logits"] = classify(revision=spec["cls_old_sha"])
out["lm_module"], out["lm_logits"], out["lm_generated"] = generate()
gen = pipeline("text-generation", model=lm_repo, trust_remote_code=True)
out["lm_pipeline"] = gen(prompt, max_new_tokens=new_tokens, do_sample=False)[0]["generated_text"]
_, out["lm_branch_logits"], out["lm_branch_generated"] = generate(revision=spec["lm_branch"])
try:
    AutoModelForSequenceClassification.from_pretrained("nobody/no-such-model", trust_remote_code=True)
except OSError as err:
    out["missing_repo_error"] = f"{type(err).__name__}: {err}"
out["card"] = open(hf_hub_download(cls_repo, "README.md"), encoding="utf-8").read()
emit(**out)
"""


def _assert_same(child: dict, local: dict, keys: tuple[str, ...]) -> None:
    import torch

    for key in keys:
        if key.endswith("_logits"):
            torch.testing.assert_close(torch.tensor(child[key]), torch.tensor(local[key]), atol=1e-5, rtol=1e-5,
                                       msg=lambda m, key=key: f"{key}: {m}")
        elif key == "cls_pipeline":
            assert [r["label"] for r in child[key]] == [r["label"] for r in local[key]]
            assert [r["score"] for r in child[key]] == pytest.approx([r["score"] for r in local[key]], abs=1e-5)
        else:
            assert child[key] == local[key], key


def test_scratchformer_publish_download_and_use_without_the_package(hub, tmp_path):
    import torch

    from hub_card import publish
    from scratchformer import ScratchformerForCausalLM, ScratchformerForSequenceClassification, train_tokenizer

    started = time.monotonic()
    torch.manual_seed(0)
    texts, labels = _corpus(48, seed=0)
    held_out, held_labels = _corpus(16, seed=1)
    tokenizer = train_tokenizer(texts + held_out, vocab_size=300, min_frequency=1, model_max_length=64)

    # A tiny trained classifier, with a metrics.json of what it really scores on held-out examples.
    classifier = ScratchformerForSequenceClassification(
        _config(tokenizer, num_labels=2, id2label={0: "negative", 1: "positive"}))
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"), labels=torch.tensor(labels))
    _train(classifier, batch, steps=12)
    with torch.no_grad():
        predicted = classifier(**tokenizer(held_out, padding=True, return_tensors="pt")).logits.argmax(-1)
    accuracy = (predicted == torch.tensor(held_labels)).float().mean().item()
    cls_dir = tmp_path / "imdb-tiny-classifier"
    classifier.save_pretrained(cls_dir)
    tokenizer.save_pretrained(cls_dir)
    (cls_dir / "metrics.json").write_text(json.dumps({
        "accuracy": accuracy, "train_samples": len(texts), "test_samples": len(held_out),
        "wall_time_s": time.monotonic() - started, "preset": "test-tiny",
    }))

    # A tiny causal LM on the same tokenizer (pad positions ignored by the loss).
    lm = ScratchformerForCausalLM(_config(tokenizer))
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    _train(lm, dict(enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)), steps=12)
    lm_dir = tmp_path / "imdb-tiny-lm"
    lm.save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    local_v1 = _local_outputs(classifier, lm, tokenizer)

    # Publish: the classifier through the CLI (as a user would), the LM through the function.
    cls_repo, lm_repo = "fixture-user/imdb-tiny-classifier", "fixture-user/imdb-tiny-lm"
    cli = subprocess.run([sys.executable, "-m", "hub_card.publish", str(cls_dir), cls_repo], cwd=REPO_ROOT,
                         env=hub.env(tmp_path / "hf_home_cli"), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr + hub.logs()
    assert cli.stdout.strip() == f"{hub.endpoint}/{cls_repo}"
    cls_v1_sha = subprocess.run(["git", "--git-dir", str(hub.git_dir(cls_repo)), "rev-parse", "main"],
                                capture_output=True, text=True, check=True).stdout.strip()
    lm_v1 = publish(lm_dir, lm_repo, endpoint=hub.endpoint, token=hub.token)
    assert lm_v1.repo_url == f"{hub.endpoint}/{lm_repo}" and lm_v1.revision == "main"
    published = set(hub.api().list_repo_files(cls_repo))
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "configuration_scratchformer.py", "modeling_scratchformer.py", "metrics.json"} <= published

    # transformers' own push_to_hub (model + tokenizer, README made by transformers) works against the same server.
    pushed_repo = "fixture-user/pushed-with-transformers"
    classifier.push_to_hub(pushed_repo, commit_message="push_to_hub model")
    tokenizer.push_to_hub(pushed_repo, commit_message="push_to_hub tokenizer")
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "configuration_scratchformer.py",
            "modeling_scratchformer.py"} <= set(hub.api().list_repo_files(pushed_repo))

    # A second commit on main (the classifier trained further), and the LM, changed, on a new branch via the CLI.
    _train(classifier, batch, steps=3)
    classifier.save_pretrained(cls_dir)
    cls_v2 = publish(cls_dir, cls_repo, endpoint=hub.endpoint, token=hub.token, commit_message="more training")
    assert cls_v2.commit_sha != cls_v1_sha
    _train(lm, dict(enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)), steps=3)
    lm.save_pretrained(lm_dir)
    cli = subprocess.run([sys.executable, "-m", "hub_card.publish", str(lm_dir), lm_repo, "--revision", "experiment"],
                         cwd=REPO_ROOT, env=hub.env(tmp_path / "hf_home_cli"), capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr + hub.logs()
    assert cli.stdout.strip() == f"{hub.endpoint}/{lm_repo}/tree/experiment"
    local_v2 = _local_outputs(classifier, lm, tokenizer)

    # One fresh process without scratchformer and with an empty cache loads main, an old sha and a branch.
    got = run_child(hub, MODEL_CHILD, tmp_path / "hf_home_child", tmp_path / "cwd", cls_repo=cls_repo,
                    lm_repo=lm_repo, texts=PROBE_TEXTS, prompt=PROMPT, new_tokens=NEW_TOKENS,
                    cls_old_sha=cls_v1_sha, lm_branch="experiment")
    assert got["cls_module"].startswith("transformers_modules.")  # the code that came with the weights
    assert got["lm_module"].startswith("transformers_modules.")
    _assert_same(got, local_v2, ("cls_logits", "cls_pipeline"))  # classifier main = second commit
    _assert_same({"cls_logits": got["cls_old_logits"]}, local_v1, ("cls_logits",))  # first commit, by sha
    _assert_same(got, local_v1, ("lm_logits", "lm_generated", "lm_pipeline"))  # LM main = untouched first commit
    _assert_same({"lm_logits": got["lm_branch_logits"], "lm_generated": got["lm_branch_generated"]}, local_v2,
                 ("lm_logits", "lm_generated"))  # LM branch "experiment"
    for old, new in (("cls_logits", "cls_logits"), ("lm_logits", "lm_branch_logits")):  # they really changed
        assert not torch.allclose(torch.tensor(local_v1[old]), torch.tensor(got[new]), atol=1e-4)
    assert "nobody/no-such-model" in got["missing_repo_error"]
    assert "is not a local folder and is not a valid model identifier" in got["missing_repo_error"]
    assert got["card"] == (cls_dir / "README.md").read_text(encoding="utf-8")
    assert f'repo = "{cls_repo}"' in got["card"] and f"| Accuracy | {accuracy:.4f} |" in got["card"]

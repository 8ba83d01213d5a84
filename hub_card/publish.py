"""Publish a saved scratchformer folder to the Hugging Face Hub: check it, write its card, upload it in one commit."""

# python -m hub_card.publish MODEL_DIR REPO_ID [--private] [--revision REV] [--commit-message MSG]
# The Hub address and token come from huggingface_hub's usual settings (HF_ENDPOINT, HF_TOKEN / `hf auth login`).

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from .card import head_of, read_json, write_model_card

MODEL_TYPE = "scratchformer"
REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
# Trainer leftovers and caches that do not belong in a model repo.
IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/**", "runs/**", "**/__pycache__/**", "*.pyc", ".cache/**",
    "optimizer.pt", "scheduler.pt", "rng_state*.pth", "training_args.bin", "trainer_state.json", ".*.tmp",
    "work/**",  # the recipes' resumable state (tokenizer copy, checkpoints), not part of the model
]
# `from .sibling import x` is the only relative import transformers copies along with remote code.
SIBLING_IMPORT = re.compile(r"^\s*from\s+\.([A-Za-z_]\w*)\s+import\b", re.MULTILINE)


class ModelFolderError(ValueError):
    """The folder cannot be published; `.problems` lists every reason."""

    def __init__(self, model_dir: Path, problems: list[str]):
        self.model_dir, self.problems = model_dir, problems
        super().__init__(f"{model_dir} cannot be published:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class PublishResult:
    """Where a publish went: the repo URL, the commit it made, and the branch."""

    repo_url: str
    commit_url: str
    commit_sha: str
    revision: str


def _module_file(reference: str) -> str:
    """`"configuration_x.ConfigClass"` (or `"other/repo--configuration_x.ConfigClass"`) -> `"configuration_x.py"`."""
    reference = reference.split("--", 1)[-1]
    return reference.rsplit(".", 1)[0] + ".py"


def validate_model_dir(model_dir: str | os.PathLike) -> dict:
    """Check a folder loads with trust_remote_code; return its config, or raise ModelFolderError listing all gaps."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(model_dir, ["not a directory"])
    problems: list[str] = []
    for name in REQUIRED_FILES:
        if not (model_dir / name).is_file():
            problems.append(f"missing {name}")
    if not (model_dir / "model.safetensors").is_file():
        index = model_dir / "model.safetensors.index.json"
        if not index.is_file():
            problems.append("missing model.safetensors (save with model.save_pretrained)")
        else:
            try:
                shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            except (OSError, ValueError) as err:
                problems.append(f"unreadable model.safetensors.index.json: {err}")
                shards = []
            problems += [f"missing weight shard {s}" for s in shards if not (model_dir / s).is_file()]

    config: dict = {}
    if (model_dir / "config.json").is_file():
        try:
            config = read_json(model_dir / "config.json")
        except (OSError, ValueError) as err:
            problems.append(f"unreadable config.json: {err}")
    if config:
        if config.get("model_type") != MODEL_TYPE:
            problems.append(f'config.json: model_type is {config.get("model_type")!r}, expected "{MODEL_TYPE}"')
        auto_map = config.get("auto_map")
        if not isinstance(auto_map, dict) or not auto_map:
            problems.append("config.json: no auto_map (the Auto classes could not find the modeling code)")
            auto_map = {}
        elif "AutoConfig" not in auto_map:
            problems.append("config.json: auto_map has no AutoConfig entry")
        # The .py files auto_map names, plus the siblings they import, must ship with the weights.
        code_files: list[str] = []
        for reference in auto_map.values():
            for ref in reference if isinstance(reference, list) else [reference]:
                if isinstance(ref, str) and ref and _module_file(ref) not in code_files:
                    code_files.append(_module_file(ref))
        checked: set[str] = set()
        while code_files:
            name = code_files.pop(0)
            if name in checked:
                continue
            checked.add(name)
            path = model_dir / name
            if not path.is_file():
                problems.append(f"missing {name} (named by auto_map or imported by its code)")
                continue
            code_files += [f"{m}.py" for m in SIBLING_IMPORT.findall(path.read_text(encoding="utf-8", errors="replace"))]
        head = (config.get("architectures") or [None])[0]
        named = {ref.rsplit(".", 1)[-1] for ref in auto_map.values() if isinstance(ref, str)}
        if head and auto_map and head not in named:
            problems.append(f"config.json: auto_map does not name the saved head {head}")
        # The card tells users to load the head with this Auto class (e.g. AutoModelForSeq2SeqLM for translation).
        auto_class = head_of(config)[1].auto_class
        if head in named and not str(auto_map.get(auto_class, "")).endswith(f".{head}"):
            problems.append(f"config.json: auto_map[{auto_class!r}] does not name {head} (the card loads it with "
                            f"{auto_class})")
    if problems:
        raise ModelFolderError(model_dir, problems)
    return config


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> PublishResult:
    """Validate `model_dir`, refresh its README.md card, create the repo (and branch), upload everything in one commit."""
    model_dir = Path(model_dir)
    validate_model_dir(model_dir)
    write_model_card(model_dir, repo_id, model_name=repo_id.split("/")[-1])  # titled as the repo, not the folder

    api = HfApi(endpoint=endpoint, token=token)  # None -> HF_ENDPOINT / HF_TOKEN, as huggingface_hub resolves them
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    branch = revision or "main"
    if branch != "main":
        # upload_folder cannot commit to a branch that does not exist yet: start it from main.
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=model_dir,
        revision=branch,
        commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} (scratchformer)",
        ignore_patterns=IGNORE_PATTERNS,
    )
    return PublishResult(repo_url=str(repo_url), commit_url=commit.commit_url, commit_sha=commit.oid,
                         revision=branch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub_card.publish", description=__doc__)
    parser.add_argument("model_dir", help="folder written by model.save_pretrained + tokenizer.save_pretrained")
    parser.add_argument("repo_id", help="namespace/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    parser.add_argument("--revision", default=None, help="branch to commit to (created from main if new)")
    parser.add_argument("--commit-message", default=None)
    args = parser.parse_args(argv)
    try:
        result = publish(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message)
    except ModelFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (HfHubHTTPError, OSError) as err:
        print(f"error: upload of {args.model_dir} to {args.repo_id} failed: {err}", file=sys.stderr)
        return 1
    url = result.repo_url if result.revision == "main" else f"{result.repo_url}/tree/{result.revision}"
    print(url)
    print(f"commit {result.commit_sha}: {result.commit_url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build a Hugging Face model card (README.md) for a saved scratchformer folder from its config and metrics.json."""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

DATASET_ID = "stanfordnlp/imdb"
DATASET_NAME = "IMDb"
LICENSE = "apache-2.0"
TAGS = ["scratchformer", "custom_code"]

# Head class suffix (config.json "architectures") -> pipeline tag, Auto class, what the model does.
HEADS = {
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification",
                                  "a sentiment classifier for English movie reviews"),
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM",
                    "a causal (left-to-right) language model of English movie-review text"),
    "ForMaskedLM": ("fill-mask", "AutoModelForMaskedLM",
                    "a masked language model of English movie-review text"),
}
BASE_HEAD = ("feature-extraction", "AutoModel", "an encoder that turns English movie-review text into vectors")

# metrics.json key -> (model-index metric type, display name, digits shown in the body).
METRICS = {
    "accuracy": ("accuracy", "Accuracy", 4),
    "f1": ("f1", "F1", 4),
    "perplexity": ("perplexity", "Perplexity", 2),
    "eval_loss": ("loss", "Eval loss", 4),
}
# Which task a metric belongs to when the folder's head does not say (a bare base model).
METRIC_TASK = {"accuracy": "text-classification", "f1": "text-classification",
               "perplexity": "text-generation", "eval_loss": "text-generation"}

IMDB_BIBTEX = """\
@inproceedings{maas-etal-2011-learning,
    title = "Learning Word Vectors for Sentiment Analysis",
    author = "Maas, Andrew L.  and
      Daly, Raymond E.  and
      Pham, Peter T.  and
      Huang, Dan  and
      Ng, Andrew Y.  and
      Potts, Christopher",
    booktitle = "Proceedings of the 49th Annual Meeting of the Association for Computational Linguistics: Human Language Technologies",
    month = jun,
    year = "2011",
    address = "Portland, Oregon, USA",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/P11-1015",
    pages = "142--150",
}"""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a file holding anything else is an error."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def load_metrics(model_dir: str | os.PathLike) -> dict[str, Any]:
    """metrics.json of the folder, or {} when there is none."""
    path = Path(model_dir) / "metrics.json"
    return read_json(path) if path.is_file() else {}


def _number(value: Any) -> int | float | None:
    """`value` if it is a finite real number (not a bool), else None: anything else is not reported."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    """`value` as a non-empty string, else None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def count_parameters(model_dir: str | os.PathLike) -> int | None:
    """Number of stored weights, read from the safetensors header(s) without loading tensors (None if unreadable)."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
    else:
        shards = ["model.safetensors"]
    total = 0
    try:
        for shard in shards:
            with open(model_dir / shard, "rb") as handle:
                (header_len,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_len))
            for name, info in header.items():
                if name != "__metadata__":
                    total += math.prod(info["shape"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    # Tied weights (LM head = embedding) are stored once, so this is the number of distinct parameters.
    return total


def _human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _head(config: dict[str, Any]) -> tuple[str | None, tuple[str, str, str]]:
    """(head class name, (pipeline tag, Auto class, description)) from config.json's architectures."""
    architectures = config.get("architectures") or []
    name = architectures[0] if architectures else None
    for suffix, head in HEADS.items():
        if name and name.endswith(suffix):
            return name, head
    return name, BASE_HEAD


def _eval_results(metrics: dict[str, Any], task: str) -> list[EvalResult]:
    """One EvalResult per metric actually present in metrics.json (a missing metric is left out)."""
    # The official IMDb test split unless metrics.json says otherwise (optional "eval_split" key).
    split = _text(metrics.get("eval_split")) or "test"
    results = []
    for key, (metric_type, metric_name, _) in METRICS.items():
        value = _number(metrics.get(key))
        if value is None:
            continue
        task_type = task if task in ("text-classification", "text-generation", "fill-mask") else METRIC_TASK[key]
        results.append(EvalResult(
            task_type=task_type,
            dataset_type=DATASET_ID,
            dataset_name=DATASET_NAME,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=value,
        ))
    return results


def _usage(task: str, auto_class: str, repo: str, tokenizer_config: dict[str, Any]) -> str:
    """Markdown: how to load the model with the Auto classes and with pipeline()."""
    load = (
        f'repo = "{repo}"\n'
        "tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)\n"
        f"model = {auto_class}.from_pretrained(repo, trust_remote_code=True)\n"
    )
    if task == "text-classification":
        direct = (
            'inputs = tokenizer("A moving story with wonderful acting.", return_tensors="pt", truncation=True)\n'
            "with torch.no_grad():\n"
            "    logits = model(**inputs).logits\n"
            "print(model.config.id2label[logits.argmax(-1).item()])\n"
        )
        pipe = (
            'classifier = pipeline("text-classification", model=repo, trust_remote_code=True)\n'
            'print(classifier("A moving story with wonderful acting.", truncation=True))\n'
        )
    elif task == "text-generation":
        direct = (
            'inputs = tokenizer("This movie was", return_tensors="pt")\n'
            "output = model.generate(**inputs, max_new_tokens=40, do_sample=False)\n"
            "print(tokenizer.decode(output[0], skip_special_tokens=True))\n"
        )
        pipe = (
            'generator = pipeline("text-generation", model=repo, trust_remote_code=True)\n'
            'print(generator("This movie was", max_new_tokens=40)[0]["generated_text"])\n'
        )
    elif task == "fill-mask":
        mask = tokenizer_config.get("mask_token")
        mask = mask.get("content") if isinstance(mask, dict) else mask
        mask = mask or "<mask>"
        direct = (
            f'inputs = tokenizer("This movie was {mask}.", return_tensors="pt")\n'
            "with torch.no_grad():\n"
            "    logits = model(**inputs).logits\n"
            "masked = inputs.input_ids[0].tolist().index(tokenizer.mask_token_id)\n"
            "print(tokenizer.decode(logits[0, masked].argmax()))\n"
        )
        pipe = (
            'fill = pipeline("fill-mask", model=repo, trust_remote_code=True)\n'
            f'print(fill("This movie was {mask}."))\n'
        )
    else:
        direct = (
            'inputs = tokenizer("A moving story with wonderful acting.", return_tensors="pt")\n'
            "with torch.no_grad():\n"
            "    vectors = model(**inputs).last_hidden_state\n"
            "print(vectors.shape)\n"
        )
        pipe = (
            'extractor = pipeline("feature-extraction", model=repo, trust_remote_code=True)\n'
            'print(len(extractor("A moving story with wonderful acting.")[0]))\n'
        )
    return (
        "The modeling code ships with the weights (`trust_remote_code=True` runs it; read "
        "`modeling_scratchformer.py` first if you do not trust the source). Nothing else is needed besides "
        "`transformers` and `torch`.\n\n"
        "```python\n"
        f"import torch\nfrom transformers import AutoTokenizer, {auto_class}, pipeline\n\n"
        f"{load}{direct}\n{pipe}"
        "```\n"
    )


def _architecture(config: dict[str, Any], head_class: str | None, n_params: int | None) -> str:
    """Markdown table of the sizes read from config.json (rows whose key is absent are skipped)."""
    rows = [("Head", f"`{head_class}`" if head_class else None)]
    for key, label in (
        ("num_hidden_layers", "Layers"),
        ("hidden_size", "Hidden size"),
        ("num_attention_heads", "Attention heads"),
        ("intermediate_size", "Feed-forward size"),
        ("max_position_embeddings", "Max positions (tokens)"),
        ("vocab_size", "Vocabulary"),
        ("position_embedding_type", "Position embeddings"),
        ("norm_placement", "LayerNorm placement"),
        ("hidden_act", "Activation"),
    ):
        value = config.get(key)
        rows.append((label, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value))
    if "tie_word_embeddings" in config and head_class and head_class.endswith(("ForCausalLM", "ForMaskedLM")):
        rows.append(("Tied input/output embeddings", "yes" if config["tie_word_embeddings"] else "no"))
    if head_class and head_class.endswith("ForSequenceClassification"):
        rows.append(("Pooling", config.get("classifier_pooling")))
        id2label = config.get("id2label")
        if isinstance(id2label, dict) and id2label:
            labels = ", ".join(f"{k} = {v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))
            rows.append(("Labels", labels))
    if n_params is not None:
        rows.append(("Parameters", f"{n_params:,} ({_human_count(n_params)})"))
    lines = ["| | |", "|---|---|"] + [f"| {label} | {value} |" for label, value in rows if value is not None]
    return "\n".join(lines) + "\n"


def _training(metrics: dict[str, Any]) -> str | None:
    """Markdown list of how the model was trained, from whatever metrics.json records (None if nothing)."""
    items = []
    preset = _text(metrics.get("preset"))
    if preset:
        items.append(f"- Preset: `{preset}`")
    hardware = _text(metrics.get("hardware"))
    if hardware:
        items.append(f"- Hardware: {hardware}")
    wall = _number(metrics.get("wall_time_s"))
    if wall is not None:
        items.append(f"- Wall time: {_duration(wall)} ({wall:.0f} s)")
    for key, label in (("train_samples", "Training examples"), ("test_samples", "Evaluation examples")):
        value = _number(metrics.get(key))
        if value is not None:
            items.append(f"- {label}: {value:,}")
    command = _text(metrics.get("command"))
    if command:
        items.append(f"- Command:\n\n  ```bash\n  {command}\n  ```")
    return "\n".join(items) + "\n" if items else None


def _results(metrics: dict[str, Any]) -> str | None:
    """Markdown table of the metrics present (None if there are none)."""
    split = _text(metrics.get("eval_split")) or "test"
    rows = []
    for key, (_, name, digits) in METRICS.items():
        value = _number(metrics.get(key))
        if value is not None:
            rows.append(f"| {name} | {value:.{digits}f} |")
    if not rows:
        return None
    return (f"Measured on the {DATASET_NAME} `{split}` split.\n\n| Metric | Value |\n|---|---|\n"
            + "\n".join(rows) + "\n")


def _limitations(task: str, config: dict[str, Any]) -> str:
    max_len = config.get("max_position_embeddings")
    lines = [
        "- Small model trained from scratch on one corpus: English movie reviews from IMDb. Expect it to do "
        "worse on other domains, other languages, and text unlike a review.",
        "- It learns the opinions, slang and biases present in IMDb reviews; do not use it for decisions about people.",
    ]
    if isinstance(max_len, int):
        lines.append(f"- Inputs longer than {max_len} tokens must be truncated (the model has no positions beyond that).")
    if task == "text-classification":
        lines.append("- Two classes only (negative / positive): mixed, sarcastic or neutral reviews are often misread.")
    elif task in ("text-generation", "fill-mask"):
        lines.append("- Generated text is review-like but can be repetitive or incoherent, and it is not factual.")
    lines.append("- Loading requires `trust_remote_code=True` (the architecture is not part of `transformers`).")
    return "\n".join(lines) + "\n"


def build_model_card(model_dir: str | os.PathLike, repo_id: str | None = None) -> ModelCard:
    """A ModelCard for a saved scratchformer folder: Hub metadata, model-index from metrics.json, and a body."""
    model_dir = Path(model_dir)
    config = read_json(model_dir / "config.json")
    tokenizer_config_path = model_dir / "tokenizer_config.json"
    tokenizer_config = read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else {}
    metrics = load_metrics(model_dir)

    repo = repo_id or f"your-username/{model_dir.resolve().name}"
    model_name = repo.split("/")[-1]
    head_class, (task, auto_class, description) = _head(config)
    n_params = count_parameters(model_dir)
    if n_params is None:
        n_params = _number(metrics.get("num_parameters"))
        n_params = int(n_params) if n_params is not None else None
    eval_results = _eval_results(metrics, task)

    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task,
        license=LICENSE,
        language="en",
        datasets=[DATASET_ID],
        tags=list(TAGS),
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )

    sections = [
        f"# {model_name}\n",
        f"**{model_name}** is {description}: a Transformer written from scratch in PyTorch (the "
        "`scratchformer` model type), packaged for Hugging Face `transformers`, trained on the "
        f"[{DATASET_NAME}](https://huggingface.co/datasets/{DATASET_ID}) movie-review dataset (Maas et al., 2011).\n",
        "## Architecture\n",
        _architecture(config, head_class, n_params),
    ]
    results = _results(metrics)
    if results:
        sections += ["## Results\n", results]
    training = _training(metrics)
    if training:
        sections += ["## Training\n", training]
    sections += [
        "## How to use\n",
        _usage(task, auto_class, repo, tokenizer_config),
        "## Limitations\n",
        _limitations(task, config),
        "## Citation\n",
        f"The {DATASET_NAME} dataset:\n\n```bibtex\n{IMDB_BIBTEX}\n```\n",
    ]
    body = "\n".join(sections)
    # The YAML header comes from ModelCardData.to_yaml(), never written by hand.
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(model_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write README.md into `model_dir` atomically (temp file + rename); returns its path."""
    model_dir = Path(model_dir)
    card = build_model_card(model_dir, repo_id)
    target = model_dir / "README.md"
    fd, tmp = tempfile.mkstemp(prefix=".README.", suffix=".md.tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(str(card))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a README should be readable like its siblings
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return target

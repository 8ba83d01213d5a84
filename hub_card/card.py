"""Build a Hugging Face model card (README.md) for a saved scratchformer folder from its config and metrics.json.

Everything that differs between kinds of model lives in tables: HEADS (config.json "architectures" -> pipeline tag,
Auto class, usage snippet, architecture rows, and how to find its Corpus), Corpus values (IMDB when metrics.json
names no "dataset" or names IMDb; a user's own data from metrics.json's "dataset", "hub_dataset", "labels",
"examples", "eval_split"; a translation run's from TRANSLATION_DATA: metadata, model-index dataset, wording,
limitations, citation), METRICS (metrics.json key -> model-index metric) and BASELINES / "compressors" (the
reference floors a recipe measured on the same split).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from huggingface_hub import EvalResult, ModelCard, ModelCardData

LICENSE = "apache-2.0"
TAGS = ["scratchformer", "custom_code"]
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French"}

@dataclass(frozen=True)
class Metric:
    """One metrics.json key as the card reports it."""

    type: str  # model-index metric type (an `evaluate` metric id)
    name: str  # display name, in the model-index and the results table
    digits: int  # digits shown in the body
    task: str  # model-index task type when the head does not say (a bare base model)
    args: dict[str, Any] | None = None  # model-index metric args (how it was measured)
    unless: tuple[str, ...] = ()  # left out when one of these keys is present: the same number under another name


GREEDY, BEAM4 = {"num_beams": 1}, {"num_beams": 4}
# metrics.json key -> Metric, in the order the card lists them.
METRICS = {
    "accuracy": Metric("accuracy", "Accuracy", 4, "text-classification"),
    "f1": Metric("f1", "F1", 4, "text-classification"),
    "bits_per_byte": Metric("bits_per_byte", "Bits per byte", 3, "text-generation"),
    "perplexity": Metric("perplexity", "Perplexity", 2, "text-generation"),
    "eval_loss": Metric("loss", "Eval loss", 4, "text-generation"),
    # training/translate.py: exact_match / chrf are the 4-beam scores again; the split keys say how each was decoded.
    "exact_match_greedy": Metric("exact_match", "Exact match (greedy)", 4, "translation", GREEDY),
    "exact_match_beam4": Metric("exact_match", "Exact match (4-beam)", 4, "translation", BEAM4),
    "exact_match": Metric("exact_match", "Exact match", 4, "translation",
                          unless=("exact_match_greedy", "exact_match_beam4")),
    "chrf_greedy": Metric("chrf", "chrF (greedy)", 2, "translation", GREEDY),
    "chrf_beam4": Metric("chrf", "chrF (4-beam)", 2, "translation", BEAM4),
    "chrf": Metric("chrf", "chrF", 2, "translation", unless=("chrf_greedy", "chrf_beam4")),
}

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

TRANSFORMER_BIBTEX = """\
@inproceedings{vaswani-etal-2017-attention,
    title = "Attention Is All You Need",
    author = "Vaswani, Ashish  and
      Shazeer, Noam  and
      Parmar, Niki  and
      Uszkoreit, Jakob  and
      Jones, Llion  and
      Gomez, Aidan N.  and
      Kaiser, {\\L}ukasz  and
      Polosukhin, Illia",
    booktitle = "Advances in Neural Information Processing Systems 30",
    year = "2017",
    pages = "5998--6008",
    url = "https://arxiv.org/abs/1706.03762",
}"""

NUM2WORDS_BIBTEX = """\
@misc{num2words,
    title = "num2words: Convert numbers to words in multiple languages",
    author = "Ogawa, Taro  and
      others",
    howpublished = "\\url{https://github.com/savoirfairelinux/num2words}",
    note = "Python library, maintained by Savoir-faire Linux",
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


# Buffers the model saves with its weights (the n-gram path's naive-Bayes ratios and word-piece table): stored in the
# safetensors, but not parameters (model.num_parameters() leaves them out, and so does the card).
SAVED_BUFFERS = ("log_count_ratio", "word_pieces")


def count_parameters(model_dir: str | os.PathLike) -> int | None:
    """Number of stored parameters, read from the safetensors header(s) without loading tensors (None if unreadable);
    the saved buffers (SAVED_BUFFERS) are not counted, so this equals model.num_parameters()."""
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
                if name != "__metadata__" and name.rsplit(".", 1)[-1] not in SAVED_BUFFERS:
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




@dataclass(frozen=True)
class Corpus:
    """What a model was trained and evaluated on, as its card states it."""

    name: str  # model-index dataset name
    dataset_type: str  # model-index dataset type: the Hub dataset id where there is one
    trained_on: str  # markdown ending the first sentence: "... trained on <trained_on>."
    measured_on: str  # markdown after "Measured on " above the results table; {split} is the eval split
    limitations: tuple[str, ...]  # the first lines of the limitations list
    citation: str  # markdown of the citation section
    hub_datasets: tuple[str, ...] = ()  # card metadata `datasets:` (Hub ids only)
    language: str | list[str] | None = None  # card metadata `language:`
    dataset_config: str | None = None  # model-index dataset config (a language pair)
    subject: str = ""  # fills {subject} in a head's description: what text the model reads
    examples: tuple[str, ...] = ()  # inputs for the usage snippets ({examples}: all, {example}: the first)
    results_note: str | None = None  # markdown below the results table
    classifier: str = "a text classifier"  # fills {classifier}: a classifier's description
    prompts: tuple[str, ...] = ("The",)  # beginnings a language model's snippet continues ({prompt}, {masked})
    noun: str = "texts"  # what one example is, in the plural ("reviews")
    label_limitation: str = ""  # fills {label_limitation}: a classifier's limitations line about its labels
    generated_like: str = "like its training text"  # fills {generated_like}: "Generated text is <...> but ..."


IMDB = Corpus(
    name="IMDb",
    dataset_type="stanfordnlp/imdb",
    hub_datasets=("stanfordnlp/imdb",),
    language="en",
    trained_on="the [IMDb](https://huggingface.co/datasets/stanfordnlp/imdb) movie-review dataset (Maas et al., 2011)",
    measured_on="the IMDb `{split}` split",
    limitations=(
        "- Small model trained from scratch on one corpus: English movie reviews from IMDb. Expect it to do "
        "worse on other domains, other languages, and text unlike a review.",
        "- It learns the opinions, slang and biases present in IMDb reviews; do not use it for decisions about people.",
    ),
    citation=f"The IMDb dataset:\n\n```bibtex\n{IMDB_BIBTEX}\n```\n",
    subject="English movie-review text",
    classifier="a sentiment classifier for English movie reviews",
    examples=("A moving story with wonderful acting.",),
    prompts=("This movie was",),
    noun="reviews",
    label_limitation="- Two classes only (negative / positive): mixed, sarcastic or neutral reviews are often misread.",
    generated_like="review-like",
)
# metrics.json "dataset" values (lower-cased) that mean the recipes' default data; no "dataset" key means it too.
IMDB_NAMES = {"imdb", "stanfordnlp/imdb"}
NUM2WORDS_URL = "https://github.com/savoirfairelinux/num2words"
TRANSFORMER_CITATION = f"The Transformer (Vaswani et al., 2017):\n\n```bibtex\n{TRANSFORMER_BIBTEX}\n```\n"


def _language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, f"`{code}`")


def _translation_facts(metrics: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(dataset, [source language, target language]) of a translation run.

    training/translate.py writes "dataset" and "languages"; older metrics.json files only have "task"
    ("number words en->de", or the --data-source given), so both are recovered from it when absent."""
    task = _text(metrics.get("task")) or ""
    dataset = _text(metrics.get("dataset")) or ("num2words" if task.startswith("number words") else _text(task))
    languages = metrics.get("languages")
    if not (isinstance(languages, list) and len(languages) == 2 and all(_text(code) for code in languages)):
        pair = re.fullmatch(r"number words ([a-z]{2,3})->([a-z]{2,3})", task)
        languages = list(pair.groups()) if pair else []
    return dataset, languages


def _count(metrics: dict[str, Any], key: str, template: str) -> str:
    """`template` filled with the number metrics.json has under `key` ("" when it has none)."""
    value = _number(metrics.get(key))
    return template.format(int(value)) if value is not None else ""


def _sample_sources(model_dir: Path) -> tuple[str, ...]:
    """The first two test sources of samples.json (the recipe's translations of test inputs), if there is one."""
    try:
        samples = json.loads((model_dir / "samples.json").read_text(encoding="utf-8"))
        return tuple(s["source"] for s in samples[:2] if _text(s.get("source")))
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return ()


def _number_words(dataset: str, languages: list[str], metrics: dict[str, Any], model_dir: Path) -> Corpus:
    """num2words' synthetic number-word pairs (training/translate.py without --data-source)."""
    source, target = languages or ["en", "?"]
    src, tgt = _language_name(source), (_language_name(target) if languages else "target-language")
    preset = metrics.get("preset_values") if isinstance(metrics.get("preset_values"), dict) else {}
    top = _number(preset.get("max_number"))
    numbers = f"whole numbers from 0 to {int(top):,}" if top is not None else "whole numbers"
    notes = []
    small = {name: _number(metrics.get(f"exact_match_below_10000_{name}")) for name in ("greedy", "beam4")}
    if all(v is not None for v in small.values()):
        notes.append("Held-out numbers below 10,000" + _count(metrics, "test_below_10000_samples", " ({:,} of them)")
                     + f", a separate test: exact match {small['greedy']:.4f} greedy, {small['beam4']:.4f} 4-beam.")
    by_digits = metrics.get("exact_match_by_digits")
    if isinstance(by_digits, dict) and by_digits:
        notes.append("Exact match (4-beam) by number of digits (test numbers in brackets): "
                     + ", ".join(f"{k}: {v:.4f}" for k, v in by_digits.items() if _number(v) is not None) + ".")
    return Corpus(
        name=f"num2words number words {source}->{target}" if languages else "num2words number words",
        dataset_type=dataset,
        language=list(languages) or None,
        dataset_config=f"{source}-{target}" if languages else None,
        subject=f"{src} number words into {tgt} number words",
        examples=_sample_sources(model_dir) or (("one hundred and twenty-six", "four thousand and twenty-one")
                                                if source == "en" else ()),
        trained_on=f"synthetic number-word pairs made with [num2words]({NUM2WORDS_URL})"
                   + _count(metrics, "train_samples", ": {:,} training pairs") + f" of {numbers}",
        measured_on="the `{split}` split" + _count(metrics, "test_samples", ": {:,} held-out numbers")
                    + ", none of them seen in training (numbers are split by a hash of the number)",
        results_note="\n\n".join(notes) + "\n" if notes else None,
        limitations=(
            f"- Trained from scratch on synthetic data only: {src} number words as num2words spells them, for "
            f"{numbers}. It is not a general translator: sentences, names, numbers written as digits or larger "
            "numbers give wrong output.",
            "- Exact match and chrF compare with num2words' spelling; an equally correct variant spelling counts as "
            "an error.",
            "- The test numbers are unseen but come from the same range and the same generator as the training "
            "pairs: the scores say nothing about real-world text.",
        ),
        citation=f"{TRANSFORMER_CITATION}\nThe training data was generated with num2words:\n\n"
                 f"```bibtex\n{NUM2WORDS_BIBTEX}\n```\n",
    )


def _parallel_text(dataset: str, languages: list[str], metrics: dict[str, Any], model_dir: Path) -> Corpus:
    """A user's parallel text (training/translate.py --data-source): a Hub dataset, or a local TSV / dataset folder."""
    hub_id = _text(metrics.get("hub_dataset"))
    ref = f"[{hub_id}](https://huggingface.co/datasets/{hub_id})" if hub_id else f"`{dataset}`"
    pair = " into ".join(_language_name(code) for code in languages)
    return Corpus(
        name=hub_id or dataset,
        dataset_type=hub_id or dataset,
        hub_datasets=(hub_id,) if hub_id else (),
        language=list(languages) or None,
        dataset_config="-".join(languages) if languages else None,
        subject=pair or f"the source texts of {ref} into their targets",
        examples=_sample_sources(model_dir) or ("Your source text.",),
        trained_on=f"the parallel text {ref}" + _count(metrics, "train_samples", " ({:,} training pairs)"),
        measured_on=f"the `{{split}}` split of {ref}" + _count(metrics, "test_samples", " ({:,} pairs)"),
        limitations=(
            f"- Small model trained from scratch on one parallel text only ({ref}). Expect it to fail on text "
            "unlike its training pairs.",
            "- It learns the errors and biases of its training pairs.",
        ),
        citation=f"{TRANSFORMER_CITATION}\nCite the parallel text {ref} as its authors ask.\n",
    )


# metrics.json "dataset" of a translation run -> its corpus; anything else is a user's parallel text.
TRANSLATION_DATA = {"num2words": _number_words}


def _translation_corpus(metrics: dict[str, Any], model_dir: Path) -> Corpus:
    dataset, languages = _translation_facts(metrics)
    return TRANSLATION_DATA.get(dataset, _parallel_text)(dataset or "unknown data", languages, metrics, model_dir)


def _is_imdb(metrics: dict[str, Any]) -> bool:
    """Whether a classifier's or language model's data is IMDb: the recipes' default (and any older metrics.json,
    which names no dataset)."""
    dataset = _text(metrics.get("dataset"))
    return dataset is None or dataset.lower() in IMDB_NAMES


def _eval_split(metrics: dict[str, Any]) -> str:
    """The split the results were measured on: metrics.json's "eval_split", else the test split."""
    return _text(metrics.get("eval_split")) or "test"


def _examples(metrics: dict[str, Any], longest: int = 200) -> tuple[str, ...]:
    """Up to 3 of metrics.json's "examples" (texts from the evaluation data), each cut at a space to `longest` chars."""
    values = metrics.get("examples")
    if isinstance(values, str):
        values = [values]
    shown = []
    for value in values if isinstance(values, list) else []:
        text = _text(value)
        if text is None:
            continue
        if len(text) > longest:
            text = text[:longest].rsplit(" ", 1)[0].rstrip() or text[:longest]
        shown.append(text)
    return tuple(shown[:3])


def label_names(metrics: dict[str, Any], model_dir: Path) -> list[str]:
    """A classifier's label names in id order: metrics.json's "labels", else config.json's id2label ([] if neither)."""
    labels = metrics.get("labels")
    if isinstance(labels, list) and labels and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                   for v in labels):
        return [str(v) for v in labels]
    try:
        id2label = read_json(model_dir / "config.json").get("id2label")
        return [str(v) for _, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))]
    except (OSError, ValueError, AttributeError, TypeError):
        return []


def _listed(names: list[str], most: int = 10) -> str:
    """`a`, `b`, `c` (the first `most` names, then how many more)."""
    shown = ", ".join(f"`{name}`" for name in names[:most])
    return shown + (f" and {len(names) - most:,} more" if len(names) > most else "")


def _user_data(metrics: dict[str, Any], model_dir: Path, classifier: bool) -> Corpus:
    """A user's own data (training/classify.py or training/lm.py given --train-file / --dataset): a local file or
    folder, or a `datasets` id (a Hub dataset when metrics.json has "hub_dataset")."""
    dataset = _text(metrics.get("dataset")) or "unknown data"
    hub_id = _text(metrics.get("hub_dataset"))
    ref = f"[{hub_id}](https://huggingface.co/datasets/{hub_id})" if hub_id else f"`{dataset}`"
    unit = "examples" if classifier else "texts"
    split = _eval_split(metrics)
    if split == "test":
        measured_on = f"the `test` split of {ref}" + _count(metrics, "test_samples", f" ({{:,}} {unit})")
        no_test = ()
    else:
        held_out = _count(metrics, "validation_samples", f"{{:,}} {unit} ")
        measured_on = (f"the `{split}` split: {held_out}held out from the training data of {ref}, which has no test "
                       "set. The same split also chose the checkpoint that was kept, so these figures may be optimistic")
        no_test = (f"- There was no test set: the results are on a `{split}` split carved from the training data, which "
                   "also guided training. Expect lower figures on new data.",)
    labels = label_names(metrics, model_dir) if classifier else []
    notes = None
    if len(labels) > 2:
        notes = f"F1 is the macro average over the {len(labels)} labels.\n"
    elif len(labels) == 2:
        notes = f"F1 is that of the label `{labels[1]}` (label 1).\n"
    examples = _examples(metrics)
    return Corpus(
        name=hub_id or dataset,
        dataset_type=hub_id or dataset,
        hub_datasets=(hub_id,) if hub_id else (),
        subject=f"the texts of {ref}",
        classifier=f"a text classifier with {len(labels)} labels ({_listed(labels)})" if labels else "a text classifier",
        examples=examples or ("Your text here.",),
        prompts=examples or ("The",),
        trained_on=(f"the labelled texts {ref}" + _count(metrics, "train_samples", " ({:,} training examples)")
                    if classifier else f"the texts {ref}" + _count(metrics, "train_samples", " ({:,} training texts)")),
        measured_on=measured_on.replace("{", "{{").replace("}", "}}"),
        results_note=notes,
        limitations=(
            f"- Small model trained from scratch on one data set only ({ref}). Expect it to do worse on text unlike "
            f"its training {unit}: other topics, other languages, another style of writing.",
            "- It learns the errors and biases of its training data; check it on cases of your own before relying on "
            "it, and do not use it for decisions about people.",
        ) + no_test,
        label_limitation=(f"- It always answers with one of its {len(labels)} labels, even for a text that fits none "
                          "of them." if labels else ""),
        citation=f"{TRANSFORMER_CITATION}\nThe training data is {ref}: unless it is your own, cite it as its authors "
                 "ask.\n",
    )


def _classifier_corpus(metrics: dict[str, Any], model_dir: Path) -> Corpus:
    return IMDB if _is_imdb(metrics) else _user_data(metrics, model_dir, classifier=True)


def _text_corpus(metrics: dict[str, Any], model_dir: Path) -> Corpus:
    """The corpus of a language model (or a bare encoder): IMDb, or the user's texts."""
    return IMDB if _is_imdb(metrics) else _user_data(metrics, model_dir, classifier=False)


@dataclass(frozen=True)
class Usage:
    """A head's usage snippet: lines after loading tokenizer and model ({examples}, {example}, {prompt}, {masked},
    {truncation} are filled in: JSON strings of the corpus's inputs, and the tokenizer's truncation argument)."""

    direct: str
    pipe: str | None = None  # pipeline() lines, where transformers has a pipeline for the task
    note: str = ""  # markdown below the code


def _tied_row(label: str) -> Callable[[dict[str, Any]], list[tuple[str, Any]]]:
    def rows(config: dict[str, Any]) -> list[tuple[str, Any]]:
        if "tie_word_embeddings" not in config:
            return []
        return [(label, "yes" if config["tie_word_embeddings"] else "no")]
    return rows


def _classifier_rows(config: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = [("Pooling", config.get("classifier_pooling"))]
    if config.get("classifier_head_tokens") is not None:
        rows.append(("Long inputs", f"first {config['classifier_head_tokens']} and last "
                     f"{config['max_position_embeddings'] - config['classifier_head_tokens']} tokens (cut by the model)"))
    if config.get("ngram_buckets"):
        words = f" and word 1- to {config['ngram_word_order']}-grams" if config.get("ngram_word_order") else ""
        rows.append(("n-gram path", f"token 1- to {config.get('ngram_order', 3)}-grams{words} of the whole input, hashed "
                     f"into {config['ngram_buckets']:,} rows, naive-Bayes weighted (NBSVM-style), added to the logits"))
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        rows.append(("Labels", ", ".join(f"{k} = {v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))))
    return rows


@dataclass(frozen=True)
class Head:
    """Everything the card says differently for one kind of model."""

    pipeline_tag: str
    auto_class: str
    description: str  # what the model is ({subject}, {classifier} come from the corpus)
    usage: Usage
    corpus: Callable[[dict[str, Any], Path], Corpus] = _text_corpus
    layer_rows: tuple[tuple[str, str], ...] = (("num_hidden_layers", "Layers"),)  # config key, label
    extra_rows: Callable[[dict[str, Any]], list[tuple[str, Any]]] = lambda config: []
    limitation: str | None = None  # a limitations line of this head ({label_limitation}, {generated_like})


# Head class suffix (config.json "architectures") -> Head.
HEADS = {
    "ForSequenceClassification": Head(
        "text-classification", "AutoModelForSequenceClassification",
        "{classifier}",
        Usage(
            'inputs = tokenizer({example}, return_tensors="pt"{truncation})\n'
            "with torch.no_grad():\n"
            "    logits = model(**inputs).logits\n"
            "print(model.config.id2label[logits.argmax(-1).item()])\n",
            'classifier = pipeline("text-classification", model=repo, trust_remote_code=True)\n'
            'print(classifier({example}{truncation}))\n',
        ),
        corpus=_classifier_corpus,
        extra_rows=_classifier_rows,
        limitation="{label_limitation}",
    ),
    "ForCausalLM": Head(
        "text-generation", "AutoModelForCausalLM",
        "a causal (left-to-right) language model of {subject}",
        Usage(
            'inputs = tokenizer({prompt}, return_tensors="pt")\n'
            "output = model.generate(**inputs, max_new_tokens=40, do_sample=False)\n"
            "print(tokenizer.decode(output[0], skip_special_tokens=True))\n",
            'generator = pipeline("text-generation", model=repo, trust_remote_code=True)  # the saved decoding\n'
            'print(generator({prompt})[0]["generated_text"])\n',
        ),
        extra_rows=_tied_row("Tied input/output embeddings"),
        limitation="- Generated text is {generated_like} but can be repetitive or incoherent, and it is not factual.",
    ),
    "ForMaskedLM": Head(
        "fill-mask", "AutoModelForMaskedLM",
        "a masked language model of {subject}",
        Usage(
            'inputs = tokenizer({masked}, return_tensors="pt")\n'
            "with torch.no_grad():\n"
            "    logits = model(**inputs).logits\n"
            "masked = inputs.input_ids[0].tolist().index(tokenizer.mask_token_id)\n"
            "print(tokenizer.decode(logits[0, masked].argmax()))\n",
            'fill = pipeline("fill-mask", model=repo, trust_remote_code=True)\n'
            'print(fill({masked}))\n',
        ),
        extra_rows=_tied_row("Tied input/output embeddings"),
        limitation="- Generated text is {generated_like} but can be repetitive or incoherent, and it is not factual.",
    ),
    "ForConditionalGeneration": Head(
        "translation", "AutoModelForSeq2SeqLM",
        "an encoder-decoder model that translates {subject}",
        Usage(
            'inputs = tokenizer({examples}, return_tensors="pt", padding=True)\n'
            "with torch.no_grad():\n"
            "    output = model.generate(**inputs, num_beams=4)\n"
            "print(tokenizer.batch_decode(output, skip_special_tokens=True))\n",
            note="`num_beams=1` decodes greedily (the greedy rows of the results). transformers 5 has no "
                 "`translation` pipeline: call `generate()` as above.\n",
        ),
        corpus=_translation_corpus,
        layer_rows=(("encoder_layers", "Encoder layers"), ("decoder_layers", "Decoder layers")),
        extra_rows=_tied_row("Shared embeddings (encoder, decoder, output)"),
        limitation="- Translations stop at the decoder's maximum length (`max_length` in generation_config.json).",
    ),
}
BASE_HEAD = Head(
    "feature-extraction", "AutoModel", "an encoder that turns {subject} into vectors",
    Usage(
        'inputs = tokenizer({example}, return_tensors="pt")\n'
        "with torch.no_grad():\n"
        "    vectors = model(**inputs).last_hidden_state\n"
        "print(vectors.shape)\n",
        'extractor = pipeline("feature-extraction", model=repo, trust_remote_code=True)\n'
        'print(len(extractor({example})[0]))\n',
    ),
)
HEAD_TASKS = {head.pipeline_tag for head in HEADS.values()}
# config.json keys shown in the architecture table after the head's layer rows.
ARCHITECTURE_ROWS = (
    ("hidden_size", "Hidden size"),
    ("num_attention_heads", "Attention heads"),
    ("intermediate_size", "Feed-forward size"),
    ("max_position_embeddings", "Max positions (tokens)"),
    ("vocab_size", "Vocabulary"),
    ("position_embedding_type", "Position embeddings"),
    ("norm_placement", "LayerNorm placement"),
    ("hidden_act", "Activation"),
)


def head_of(config: dict[str, Any]) -> tuple[str | None, Head]:
    """(head class name, Head) from config.json's architectures."""
    architectures = config.get("architectures") or []
    name = architectures[0] if architectures else None
    for suffix, head in HEADS.items():
        if name and name.endswith(suffix):
            return name, head
    return name, BASE_HEAD


def _reported(metrics: dict[str, Any]) -> list[tuple[Metric, int | float]]:
    """(Metric, value) for every metric actually present in metrics.json (a missing one is left out)."""
    reported = []
    for key, metric in METRICS.items():
        value = _number(metrics.get(key))
        if value is not None and not any(_number(metrics.get(other)) is not None for other in metric.unless):
            reported.append((metric, value))
    return reported


def _eval_results(metrics: dict[str, Any], task: str, corpus: Corpus) -> list[EvalResult]:
    """One EvalResult per metric present in metrics.json."""
    # The corpus's official test split unless metrics.json says otherwise (optional "eval_split" key).
    split = _eval_split(metrics)
    return [
        EvalResult(
            task_type=task if task in HEAD_TASKS else metric.task,
            dataset_type=corpus.dataset_type,
            dataset_name=corpus.name,
            dataset_config=corpus.dataset_config,
            dataset_split=split,
            metric_type=metric.type,
            metric_name=metric.name,
            metric_value=value,
            metric_args=metric.args,
        )
        for metric, value in _reported(metrics)
    ]


def _cuts_long_inputs(head: Head, config: dict[str, Any]) -> bool:
    """Whether the model cuts long inputs itself (a classifier with classifier_head_tokens: first and last tokens)."""
    return (head.pipeline_tag == "text-classification" and isinstance(config.get("classifier_head_tokens"), int)
            and isinstance(config.get("max_position_embeddings"), int))


def _usage(head: Head, repo: str, tokenizer_config: dict[str, Any], corpus: Corpus, config: dict[str, Any]) -> str:
    """Markdown: how to load the model with the Auto classes (and with pipeline() where there is one)."""
    mask = tokenizer_config.get("mask_token")
    mask = mask.get("content") if isinstance(mask, dict) else mask
    example = corpus.examples[0] if corpus.examples else "Your text here."
    prompt = corpus.prompts[0] if corpus.prompts else "The"
    fields = {
        "examples": json.dumps(list(corpus.examples), ensure_ascii=False),
        "example": json.dumps(example, ensure_ascii=False),
        "prompt": json.dumps(prompt, ensure_ascii=False),
        "masked": json.dumps(f"{prompt} {mask or '<mask>'}.", ensure_ascii=False),
        # A model that keeps the first and last tokens of a long text itself must get the whole text.
        "truncation": "" if _cuts_long_inputs(head, config) else ", truncation=True",
    }
    load = (
        f'repo = "{repo}"\n'
        "tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)\n"
        f"model = {head.auto_class}.from_pretrained(repo, trust_remote_code=True)\n"
    )
    code = f"{load}{head.usage.direct.format(**fields)}"
    imports = f"import torch\nfrom transformers import AutoTokenizer, {head.auto_class}"
    if head.usage.pipe:
        imports += ", pipeline"
        code += f"\n{head.usage.pipe.format(**fields)}"
    return (
        "The modeling code ships with the weights (`trust_remote_code=True` runs it; read "
        "`modeling_scratchformer.py` first if you do not trust the source). Nothing else is needed besides "
        "`transformers` and `torch`.\n\n"
        f"```python\n{imports}\n\n{code}```\n"
        + (f"\n{head.usage.note}" if head.usage.note else "")
    )


def ngram_table(config: dict[str, Any]) -> tuple[int, int] | None:
    """(buckets, labels) of a classifier's n-gram path, whose table holds buckets x labels weights; None without one."""
    buckets = config.get("ngram_buckets")
    if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets <= 0:
        return None
    id2label = config.get("id2label")
    labels = len(id2label) if isinstance(id2label, dict) and id2label else config.get("num_labels", 2)
    return (buckets, labels) if isinstance(labels, int) and labels > 0 else None


def _architecture(config: dict[str, Any], head_class: str | None, head: Head, n_params: int | None) -> str:
    """Markdown table of the sizes read from config.json (rows whose key is absent are skipped)."""
    rows = [("Head", f"`{head_class}`" if head_class else None)]
    for key, label in head.layer_rows + ARCHITECTURE_ROWS:
        value = config.get(key)
        rows.append((label, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value))
    rows += head.extra_rows(config)
    if n_params is not None:
        value = f"{n_params:,} ({_human_count(n_params)})"
        table = ngram_table(config) if head.pipeline_tag == "text-classification" else None
        if table:
            buckets, labels = table
            value += (f", of which {buckets * labels:,} ({_human_count(buckets * labels)}) in the n-gram table "
                      f"({buckets:,} buckets × {labels} labels)")
        rows.append(("Parameters", value))
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
    split = _eval_split(metrics)
    evaluated = "test_samples" if split == "test" else "validation_samples"
    for key, label in (("train_samples", "Training examples"), (evaluated, "Evaluation examples")):
        value = _number(metrics.get(key))
        if value is not None:
            items.append(f"- {label}: {value:,}" + ("" if key != evaluated or split == "test" else f" (`{split}`)"))
    notes = metrics.get("data_notes")
    notes = [_text(note) for note in notes] if isinstance(notes, list) else []
    if any(notes):
        items.append("- Data: " + "; ".join(note for note in notes if note))
    command = _text(metrics.get("command"))
    if command:
        items.append(f"- Command:\n\n  ```bash\n  {command}\n  ```")
    return "\n".join(items) + "\n" if items else None


# metrics.json "baselines" names (training/baselines.py) -> how the card names them.
BASELINES = {
    "nbsvm-bi": "NBSVM-bi: binarized word 1-2-grams, naive-Bayes weighted linear SVM (Wang & Manning, 2012)",
    "tfidf-lr": "TF-IDF word 1-2-grams, logistic regression",
}


def _cell(value: int | float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if value is not None else "–"


def _baselines(metrics: dict[str, Any]) -> str | None:
    """Markdown table of a classifier's linear baselines (metrics.json "baselines") beside its own scores."""
    table = metrics.get("baselines")
    rows = []
    for name, scores in table.items() if isinstance(table, dict) else ():
        scores = scores if isinstance(scores, dict) else {}
        accuracy, f1, seconds = (_number(scores.get(key)) for key in ("accuracy", "f1", "seconds"))
        if accuracy is not None or f1 is not None:
            label = BASELINES.get(name) or f"`{str(name).replace('|', '/')}`"
            rows.append(f"| {label} | {_cell(accuracy, 4)} | {_cell(f1, 4)} | "
                        f"{_duration(seconds) if seconds is not None else '–'} |")
    if not rows:
        return None
    wall = _number(metrics.get("wall_time_s"))
    own = (f"| this model | {_cell(_number(metrics.get('accuracy')), 4)} | {_cell(_number(metrics.get('f1')), 4)} | "
           f"{_duration(wall) + ' (whole run)' if wall is not None else '–'} |")
    return ("### Linear baselines on the same split\n\n"
            "Word n-gram models without a neural network, trained on the same training data and scored on the same "
            "split: where they come close, the Transformer does not pay for its cost on this data. Time: training "
            "and scoring.\n\n| Model | Accuracy | F1 | Time |\n|---|---|---|---|\n" + "\n".join([own] + rows) + "\n")


# training/seeds.py's figure names -> (how the card names them, digits): the metrics as METRICS shows them, then
# what only seeds has; the others (wall time) stay out of the card.
SEED_FIGURES = {**{key: (METRICS[key].name, METRICS[key].digits) for key in ("accuracy", "bits_per_byte", "exact_match")},
                "validation_accuracy": ("Validation accuracy", 4),
                "validation_bits_per_byte": ("Validation bits per byte", 3),
                "nbsvm-bi": ("NBSVM-bi, same runs", 4), "tfidf-lr": ("TF-IDF + LR, same runs", 4)}


def _over_seeds(metrics: dict[str, Any]) -> str | None:
    """Markdown table of the same command's figures over several seeds (metrics.json "over_seeds", written by
    training.seeds): what a user can expect from the command, beside this one model's figures."""
    seeds = metrics.get("over_seeds")
    figures = seeds.get("figures") if isinstance(seeds, dict) else None
    rows = []
    for name, (label, digits) in SEED_FIGURES.items():
        figure = figures.get(name) if isinstance(figures, dict) else None
        mean, std = (_number(figure.get(key)) for key in ("mean", "std")) if isinstance(figure, dict) else (None, None)
        if mean is not None and std is not None:
            values = figure.get("per_seed") if isinstance(figure.get("per_seed"), dict) else {}
            listed = ", ".join(_cell(_number(value), digits) for value in values.values())
            rows.append(f"| {label} | {mean:.{digits}f} ± {std:.{digits}f} | {listed} |")
    if not rows:
        return None
    names = ", ".join(str(seed) for seed in seeds.get("seeds") or [])
    beats = seeds.get("every_seed_beats_nbsvm_bi")
    verdict = {True: " Every seed beat NBSVM-bi of its own run.",
               False: " Not every seed beat NBSVM-bi of its own run."}.get(beats, "")
    return ("### Over seeds\n\n"
            f"The same command with only `--seed` changed (seeds {names}; this model is seed {seeds.get('seed')}): mean "
            f"± sample standard deviation, then each seed's value.{verdict}\n\n"
            "| Figure | Mean ± sd | Per seed |\n|---|---|---|\n" + "\n".join(rows) + "\n")


def _compressors(metrics: dict[str, Any]) -> str | None:
    """Markdown table of general-purpose compressors' bits per byte (metrics.json "compressors") beside the LM's."""
    table = metrics.get("compressors")
    rows = [f"| `{name}` | {value:.3f} |" for name, value in
            ((name, _number(value)) for name, value in (table.items() if isinstance(table, dict) else ()))
            if value is not None]
    if not rows:
        return None
    own = _number(metrics.get("bits_per_byte"))
    own_row = [f"| this model | {own:.3f} |"] if own is not None else []
    return ("### General-purpose compressors on the same text\n\n"
            "Bits per byte that standard compressors reach on the same evaluation text, learning it as they go: a "
            "floor that a language model of this text should beat (lower is better).\n\n"
            "| | Bits per byte |\n|---|---|\n" + "\n".join(own_row + rows) + "\n")


def _results(metrics: dict[str, Any], corpus: Corpus) -> str | None:
    """Markdown table of the metrics present, then the reference floors measured beside them (None if no metric)."""
    split = _eval_split(metrics)
    rows = [f"| {metric.name} | {value:.{metric.digits}f} |" for metric, value in _reported(metrics)]
    if not rows:
        return None
    note = f"\n{corpus.results_note}" if corpus.results_note else ""
    floors = "".join(f"\n{part}" for part in (_over_seeds(metrics), _baselines(metrics), _compressors(metrics)) if part)
    return (f"Measured on {corpus.measured_on.format(split=split)}.\n\n| Metric | Value |\n|---|---|\n"
            + "\n".join(rows) + "\n" + note + floors)


def _markdown_escaped(text: str) -> str:
    """Model text shown verbatim inside a Markdown quote: its markup characters escaped, newlines shown as ⏎."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text.strip()).replace("\n", " ⏎ ")


# "decoding_test" rows that are the evaluation texts' own continuations, not a decoding.
REFERENCE_ROWS = ("reviews", "texts", "reference")


def _decoding(metrics: dict[str, Any], model_dir: Path, corpus: Corpus) -> str | None:
    """Markdown: the saved default decoding, how each decoding's continuations read, and unedited samples of the
    default (a causal LM run's metrics.json "decoding_test" and samples.json); None for other models."""
    table, default = metrics.get("decoding_test"), _text(metrics.get("default_decoding"))
    if not isinstance(table, dict) or not default:
        return None
    columns = [("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"), ("repeated_4gram_share", "repeated 4-grams"),
               ("whitespace_only_share", "whitespace only"), ("known_word_share", "known words")]
    noun, split = corpus.noun, _eval_split(metrics)
    lines = [
        f"`generation_config.json` holds the decoding chosen on validation {noun}, `{default}` "
        f"(`{json.dumps(metrics.get('default_decoding_settings', {}))}`): of the decodings whose continuations do not "
        f"degenerate (no blank output, no more repeated 4-grams than the {noun}, at least 90 % of their distinct-2), "
        f"the one with the most real words. Continuations of the first sentence of {split} {noun}:\n",
        "| Decoding | " + " | ".join(label for _, label in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, stats in table.items():
        # The texts' own continuations, as a yardstick (the IMDb recipe calls them "reviews").
        label = (f"the {noun} themselves" if name in REFERENCE_ROWS
                 else f"`{name}`" + (" (default)" if name == default else ""))
        lines.append(f"| {label} | " + " | ".join(f"{_number(stats.get(k)) or 0:.3f}" for k, _ in columns) + " |")
    speed = _number(metrics.get("pipeline_tokens_per_s"))
    if speed is not None:
        lines.append(f"\n`pipeline(\"text-generation\")` with the default decoding: {speed:,.0f} new tokens/s (batched).")
    path = model_dir / "samples.json"
    samples = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    shown = [s for s in samples if _text(s.get("prompt")) and isinstance(s.get(default), str)]
    if shown:
        lines.append("\nSamples of the default decoding, unedited (prompt in bold):\n")
        for sample in shown:
            text = f"**{_markdown_escaped(sample['prompt'])}** {_markdown_escaped(sample[default])}"
            lines.append(f"> {text}\n")
    return "\n".join(lines) + "\n"


def _limitations(head: Head, corpus: Corpus, config: dict[str, Any]) -> str:
    max_len = config.get("max_position_embeddings")
    lines = list(corpus.limitations)
    if _cuts_long_inputs(head, config):
        first = config["classifier_head_tokens"]
        ngram = ", and the n-gram path reads the whole text" if ngram_table(config) else ""
        lines.append(f"- Texts longer than {max_len} tokens are cut by the model itself: the Transformer reads their "
                     f"first {first} and last {max_len - first} tokens{ngram}. Pass texts whole (`truncation=True` "
                     f"would keep only their first {max_len} tokens); what lies between is not seen by the Transformer.")
    elif isinstance(max_len, int):
        lines.append(f"- Inputs longer than {max_len} tokens must be truncated (the model has no positions beyond that).")
    limitation = head.limitation.format(label_limitation=corpus.label_limitation,
                                        generated_like=corpus.generated_like) if head.limitation else ""
    if limitation:
        lines.append(limitation)
    lines.append("- Loading requires `trust_remote_code=True` (the architecture is not part of `transformers`).")
    return "\n".join(lines) + "\n"


def _folder_name(model_dir: Path) -> str:
    """The model's name when no one gives it: the folder's, or for a recipe's staging folder (OUT/work/publish or
    OUT/work/publish.tmp, whose files then move to OUT) the output folder's."""
    folder = model_dir.resolve()
    if folder.name in ("publish", "publish.tmp") and folder.parent.name == "work" and folder.parent.parent.name:
        return folder.parent.parent.name
    return folder.name


def build_model_card(model_dir: str | os.PathLike, repo_id: str | None = None, *,
                     model_name: str | None = None) -> ModelCard:
    """A ModelCard for a saved scratchformer folder: Hub metadata, model-index from metrics.json, and a body.

    `model_name` titles the card (default: the last part of `repo_id`, else the folder's name); `repo_id` is what the
    usage snippet loads (default: your-username/<model_name>)."""
    model_dir = Path(model_dir)
    config = read_json(model_dir / "config.json")
    tokenizer_config_path = model_dir / "tokenizer_config.json"
    tokenizer_config = read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else {}
    metrics = load_metrics(model_dir)

    model_name = _text(model_name) or (repo_id.split("/")[-1] if repo_id else _folder_name(model_dir))
    repo = repo_id or f"your-username/{model_name}"
    head_class, head = head_of(config)
    corpus = head.corpus(metrics, model_dir)
    # One count everywhere: metrics.json's model.num_parameters() when the recipe recorded it.
    n_params = _number(metrics.get("num_parameters"))
    n_params = int(n_params) if n_params is not None else count_parameters(model_dir)
    eval_results = _eval_results(metrics, head.pipeline_tag, corpus)

    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=head.pipeline_tag,
        license=LICENSE,
        language=corpus.language,
        datasets=list(corpus.hub_datasets) or None,
        tags=list(TAGS),
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )

    sections = [
        f"# {model_name}\n",
        f"**{model_name}** is {head.description.format(subject=corpus.subject, classifier=corpus.classifier)}: "
        "a Transformer written from scratch "
        "in PyTorch (the `scratchformer` model type), packaged for Hugging Face `transformers`, trained on "
        f"{corpus.trained_on}.\n",
        "## Architecture\n",
        _architecture(config, head_class, head, n_params),
    ]
    results = _results(metrics, corpus)
    if results:
        sections += ["## Results\n", results]
    decoding = _decoding(metrics, model_dir, corpus)
    if decoding:
        sections += ["## Generation\n", decoding]
    training = _training(metrics)
    if training:
        sections += ["## Training\n", training]
    sections += [
        "## How to use\n",
        _usage(head, repo, tokenizer_config, corpus, config),
        "## Limitations\n",
        _limitations(head, corpus, config),
        "## Citation\n",
        corpus.citation,
    ]
    body = "\n".join(sections)
    # The YAML header comes from ModelCardData.to_yaml(), never written by hand.
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def write_model_card(model_dir: str | os.PathLike, repo_id: str | None = None, *,
                     model_name: str | None = None) -> Path:
    """Write README.md into `model_dir` atomically (temp file + rename); returns its path. `repo_id` and
    `model_name` as for build_model_card (a recipe that stages its files elsewhere passes its output folder's name)."""
    model_dir = Path(model_dir)
    card = build_model_card(model_dir, repo_id, model_name=model_name)
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

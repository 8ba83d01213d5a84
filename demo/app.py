"""A Gradio page that shows scratchformer models at work: classify a text into the model's own labels (with the
attention behind the pooled vector), generate a continuation token by token, translate (with the cross-attention
alignment).

Models load with `trust_remote_code=True` from their folders or Hub repos, so the page also runs where the
scratchformer package is not installed.
"""

import functools
import inspect
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TextIteratorStreamer,
    pipeline,
)

# Which tab each head gets: its architecture name, as config.json records it.
TASKS = {
    "ScratchformerForSequenceClassification": ("classify", AutoModelForSequenceClassification),
    "ScratchformerForCausalLM": ("generate", AutoModelForCausalLM),
    "ScratchformerForConditionalGeneration": ("translate", AutoModelForSeq2SeqLM),
}


class DemoInputError(ValueError):
    """Something the page shows its user as a message (an empty or unusable input), not a crash."""


@dataclass
class LoadedModel:
    name: str
    source: str
    task: str
    model: torch.nn.Module
    tokenizer: object
    input_name: str = "text"  # what the classify tab calls its input: "review" for an IMDb model


IMDB_NAMES = {"imdb", "stanfordnlp/imdb"}  # metrics.json "dataset" of the recipes' default data


def read_metrics(source: str) -> dict:
    """The folder's metrics.json, or {} (a Hub repo id, a folder without one, or an unreadable file)."""
    try:
        metrics = json.loads((Path(source) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def classifier_input_name(source: str, config) -> str:
    """The classify tab's word for its input: "review" for a movie-review (IMDb) classifier, else "text".
    metrics.json's "dataset" says which; without one (an older run, a Hub repo) the IMDb recipe's NEGATIVE/POSITIVE
    labels do."""
    dataset = read_metrics(source).get("dataset")
    if isinstance(dataset, str):
        return "review" if dataset.strip().lower() in IMDB_NAMES else "text"
    labels = {str(label).upper() for label in (getattr(config, "id2label", None) or {}).values()}
    return "review" if labels == {"NEGATIVE", "POSITIVE"} else "text"


def label_names(config) -> list[str]:
    """The classifier's own label names, in id order (what pipeline('text-classification') answers with)."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def load(source: str) -> LoadedModel:
    """A recipe's output folder or a Hub repo id, loaded with its own code; a clear error if it is not one of ours."""
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise DemoInputError(f"{source} is not a model folder or Hub repo this demo can read ({error})") from error
    architectures = getattr(config, "architectures", None) or []
    if config.model_type != "scratchformer" or not any(a in TASKS for a in architectures):
        raise DemoInputError(
            f"{source} is not a scratchformer model (its config has model_type={config.model_type!r}, "
            f"architectures={architectures}); pass a folder made by the training recipes"
        )
    task, auto_class = TASKS[next(a for a in architectures if a in TASKS)]
    # The written-out ("eager") attention is the one that returns attention weights for the heat-maps.
    model = auto_class.from_pretrained(source, trust_remote_code=True, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)
    if task == "generate":
        tokenizer.truncation_side = "left"  # a continuation follows the end of its prompt: keep that end
    input_name = classifier_input_name(source, config) if task == "classify" else "text"
    return LoadedModel(Path(source).name or source, source, task, model, tokenizer, input_name)


def checked_text(text: str | None, what: str) -> str:
    """The user's text, stripped; an empty one is refused with a message."""
    text = (text or "").strip()
    if not text:
        raise DemoInputError(f"The {what} is empty: type some text first.")
    return text


def truncation_note(tokenizer, text: str, limit: int, kept: str) -> str:
    """A line saying how an over-long input was cut, or '' when it fits."""
    length = len(tokenizer(text, add_special_tokens=True)["input_ids"])
    if length <= limit:
        return ""
    return f"The text has {length} tokens and the model reads at most {limit}: {kept}."


def model_limit(loaded: LoadedModel) -> int:
    return min(loaded.model.config.max_position_embeddings, loaded.tokenizer.model_max_length)


def figure_png(fig) -> "PIL.Image.Image":  # noqa: F821 - PIL comes with gradio
    """A matplotlib figure as a PIL image (for gr.Image)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    buffer.seek(0)
    return Image.open(buffer).copy()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------------------------
# Classify
# ---------------------------------------------------------------------------------------------------------------


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]).replace("\n", "\\n") or "·" for i in ids]


def pooled_attention(attentions, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[layers, heads, keys]: how much each token is attended to by the positions the pooled vector is made of
    (every real token for mean/max pooling, the first or last real token for cls/last)."""
    stacked = torch.stack([a[0] for a in attentions])  # [layers, heads, queries, keys]
    real = attention_mask[0].bool()
    if pooling == "cls":
        return stacked[:, :, int(real.nonzero()[0])]
    if pooling == "last":
        return stacked[:, :, int(real.nonzero()[-1])]
    return stacked[:, :, real].mean(2)


def attention_strip(weights: torch.Tensor, labels: list[str], title: str):
    """One row of attention weights over the text's tokens, wrapped into lines of 20 tokens."""
    plt = pyplot()
    per_row = 20
    rows = (len(labels) + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, 1, figsize=(11, 0.9 * rows + 0.8), squeeze=False)
    bottom, top = float(weights.min()), float(weights.max())  # the colour scale spans this text's own range
    for r, ax in enumerate(axes[:, 0]):
        part = weights[r * per_row : (r + 1) * per_row]
        ax.imshow(part[None].numpy(), cmap="viridis", vmin=bottom, vmax=top, aspect="auto")
        ax.set_xticks(range(len(part)), labels[r * per_row : (r + 1) * per_row], rotation=45, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    image = figure_png(fig)
    plt.close(fig)
    return image


def classify(loaded: LoadedModel, text: str, layer: int, head: str):
    """Label and score from pipeline('text-classification') (the model's own label names), the heat-map, and a
    message (truncation)."""
    text = checked_text(text, loaded.input_name)
    config = loaded.model.config
    limit = config.max_position_embeddings
    classifier = pipeline("text-classification", model=loaded.model, tokenizer=loaded.tokenizer)
    head_tokens = getattr(config, "classifier_head_tokens", None)
    if head_tokens is None:  # the tokenizer keeps the first `limit` tokens
        scores = classifier(text, truncation=True, max_length=limit, top_k=None)
        inputs = loaded.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
        kept = f"the first {limit} were kept"
    else:  # the model keeps head and tail itself, by its own rule (read from its code, which may be remote code)
        scores = classifier(text, top_k=None)
        ids = inspect.getmodule(loaded.model).head_and_tail(loaded.tokenizer(text)["input_ids"], limit, head_tokens)
        inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        kept = f"the first {head_tokens} and the last {limit - head_tokens} were kept"
    with torch.no_grad():
        attentions = loaded.model(**inputs, output_attentions=True).attentions
    weights = pooled_attention(attentions, inputs["attention_mask"], config.classifier_pooling)
    layer = max(1, min(int(layer), weights.shape[0]))
    row = weights[layer - 1].mean(0) if head == "mean" else weights[layer - 1, int(head)]
    title = f"attention the pooled vector draws on: layer {layer}, head {head}"
    image = attention_strip(row, token_labels(loaded.tokenizer, inputs["input_ids"][0].tolist()), title)
    note = truncation_note(loaded.tokenizer, text, limit, kept)
    return {s["label"]: float(s["score"]) for s in scores}, image, note


# ---------------------------------------------------------------------------------------------------------------
# Generate
# ---------------------------------------------------------------------------------------------------------------


def decoding_settings(decoding: str, num_beams: int, temperature: float, top_p: float) -> dict:
    """generate() keywords of the chosen decoding; 'default' keeps the folder's generation_config.json."""
    if decoding == "greedy":
        return dict(do_sample=False, num_beams=1)
    if decoding == "beam":
        return dict(do_sample=False, num_beams=int(num_beams))
    if decoding == "sampling":
        return dict(do_sample=True, num_beams=1, temperature=float(temperature), top_p=float(top_p))
    return {}


def generate_stream(loaded: LoadedModel, prompt: str, decoding: str, max_new_tokens: int, num_beams: int,
                    temperature: float, top_p: float):
    """Yield (text so far, message) as the model writes, token by token (beam search only at the end: its beams
    are not final until the search stops)."""
    prompt = checked_text(prompt, "prompt")
    limit = model_limit(loaded)
    # The prompt keeps its end (the continuation follows it), leaving at least one position for a new token; the
    # new tokens get what is left of the model's window.
    note = truncation_note(loaded.tokenizer, prompt, limit - 1, f"its last {limit - 1} were kept")
    inputs = loaded.tokenizer(prompt, truncation=True, max_length=limit - 1, return_tensors="pt")
    room = limit - inputs["input_ids"].shape[1]
    if int(max_new_tokens) > room:
        note = f"{note} Only {room} new tokens fit in the model's {limit}-token window after this prompt.".strip()
    max_new_tokens = min(int(max_new_tokens), room)
    settings = dict(**inputs, max_new_tokens=max_new_tokens, **decoding_settings(decoding, num_beams, temperature, top_p))
    if (settings.get("num_beams") or loaded.model.generation_config.num_beams or 1) > 1:
        with torch.no_grad():
            output = loaded.model.generate(**settings)
        yield loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True), note
        return
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    worker = threading.Thread(target=lambda: loaded.model.generate(**settings, streamer=streamer), daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text, note
    worker.join()


# ---------------------------------------------------------------------------------------------------------------
# Translate
# ---------------------------------------------------------------------------------------------------------------


def translate(loaded: LoadedModel, text: str):
    """The translation (greedy) and its cross-attention alignment (last decoder layer, mean over heads)."""
    text = checked_text(text, "source text")
    limit = model_limit(loaded)
    inputs = loaded.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
    with torch.no_grad():
        # Room for a target a few times the source's length (it stops earlier, at its end-of-sequence token).
        longest = min(limit, 4 * inputs["input_ids"].shape[1] + 16)
        generated = loaded.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=longest)
        out = loaded.model(**inputs, decoder_input_ids=generated[:, :-1], output_attentions=True)
    weights = out.cross_attentions[-1][0].mean(0)  # [target, source]
    sources = token_labels(loaded.tokenizer, inputs["input_ids"][0].tolist())
    targets = token_labels(loaded.tokenizer, generated[0, 1:].tolist())
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.45 * len(sources)), max(3.0, 1.2 + 0.3 * len(targets))))
    ax.imshow(weights.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(sources)), sources, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(targets)), targets, fontsize=8)
    ax.set_xlabel("source token")
    ax.set_ylabel("generated token")
    ax.set_title("cross-attention, last decoder layer, mean over heads", fontsize=9)
    fig.tight_layout()
    image = figure_png(fig)
    plt.close(fig)
    note = truncation_note(loaded.tokenizer, text, limit, f"the first {limit} were kept")
    return loaded.tokenizer.decode(generated[0], skip_special_tokens=True), image, note


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def shown_errors(function, outputs_before_note: int):
    """Run a handler; a DemoInputError clears its outputs and puts the message in the note line under them (a
    message that stays on the page, unlike a pop-up)."""
    def cleared(error):
        return (None,) * outputs_before_note + (f"**{error}**",)

    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator(*args):
            try:
                yield from function(*args)
            except DemoInputError as error:
                yield cleared(error)
        return generator

    @functools.wraps(function)
    def handler(*args):
        try:
            return function(*args)
        except DemoInputError as error:
            return cleared(error)
    return handler


def metrics_line(source: str) -> str:
    """The headline figures of a recipe's metrics.json, when the folder has one."""
    path = Path(source) / "metrics.json"
    if not path.is_file():
        return ""
    metrics = json.loads(path.read_text())
    shown = {k: metrics[k] for k in ("accuracy", "f1", "perplexity", "bits_per_byte", "exact_match") if k in metrics}
    return " · ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


def build(models: list[LoadedModel]):
    """The Gradio Blocks page: one tab per loaded model."""
    import gradio as gr

    with gr.Blocks(title="scratchformer demo", analytics_enabled=False) as page:
        gr.Markdown("# scratchformer\nA Transformer written from scratch, as a Hugging Face transformers model type.")
        for loaded in models:
            config = loaded.model.config
            header = " · ".join(filter(None, [
                f"`{loaded.name}`", f"{sum(p.numel() for p in loaded.model.parameters()) / 1e6:.2f} M parameters",
                metrics_line(loaded.source),
            ]))
            if loaded.task == "classify":
                with gr.Tab(f"Classify ({loaded.name})", elem_id="tab-classify"):
                    labels = label_names(config)
                    gr.Markdown(header + (" · labels: " + ", ".join(f"`{name}`" for name in labels) if labels else ""))
                    text = gr.Textbox(label=loaded.input_name.capitalize(), lines=5, elem_id="classify-text")
                    with gr.Row():
                        layers = getattr(config, "num_hidden_layers", 1)
                        layer = gr.Slider(1, layers, value=layers, step=1, label="layer")
                        head = gr.Dropdown(["mean"] + [str(h) for h in range(config.num_attention_heads)],
                                           value="mean", label="head")
                    button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                    label = gr.Label(label="Prediction", elem_id="classify-label")
                    note = gr.Markdown(elem_id="classify-note")
                    heatmap = gr.Image(label="Attention", type="pil", elem_id="classify-heatmap")
                    run = shown_errors(lambda t, l, h, m=loaded: classify(m, t, l, h), 2)
                    button.click(run, [text, layer, head], [label, heatmap, note])
            elif loaded.task == "generate":
                with gr.Tab(f"Generate ({loaded.name})", elem_id="tab-generate"):
                    gr.Markdown(header)
                    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="generate-prompt")
                    with gr.Row():
                        decoding = gr.Radio(["default", "greedy", "beam", "sampling"], value="default",
                                            label="decoding ('default': the folder's generation_config.json)")
                        window = model_limit(loaded)
                        max_new = gr.Slider(1, window - 1, value=min(64, window // 2), step=1, label="new tokens",
                                            elem_id="generate-max-new")
                        beams = gr.Slider(2, 8, value=4, step=1, label="beams")
                        temperature = gr.Slider(0.1, 2.0, value=0.8, label="temperature")
                        top_p = gr.Slider(0.1, 1.0, value=0.95, label="top-p")
                    button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    output = gr.Textbox(label="Continuation", lines=8, elem_id="generate-output")
                    note = gr.Markdown(elem_id="generate-note")
                    run = shown_errors(lambda *a, m=loaded: (yield from generate_stream(m, *a)), 1)
                    button.click(run, [prompt, decoding, max_new, beams, temperature, top_p], [output, note])
            else:
                with gr.Tab(f"Translate ({loaded.name})", elem_id="tab-translate"):
                    gr.Markdown(header)
                    source = gr.Textbox(label="Source", lines=2, elem_id="translate-source")
                    button = gr.Button("Translate", variant="primary", elem_id="translate-button")
                    output = gr.Textbox(label="Translation", elem_id="translate-output")
                    note = gr.Markdown(elem_id="translate-note")
                    alignment = gr.Image(label="Cross-attention", type="pil", elem_id="translate-alignment")
                    run = shown_errors(lambda t, m=loaded: translate(m, t), 2)
                    button.click(run, [source], [output, alignment, note])
    return page


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders made by the recipes, or Hub repo ids")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        models = [load(source) for source in args.models]
    except DemoInputError as error:
        parser.exit(2, f"error: {error}\n")
    page = build(models)
    page.queue()
    print(f"scratchformer demo: http://{args.host}:{args.port}/", flush=True)
    page.launch(server_name=args.host, server_port=args.port, share=False, show_error=True, quiet=True)

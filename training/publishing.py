"""What a finished run writes: metrics.json's shared keys, the training curve and attention plots, and the Hub-ready
folder with its model card (staged whole, then moved into place: resume.publish_staged)."""

import math
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from . import sources
from .resume import PUBLISH, WORK, enter_phase, process_state, publish_staged, save_atomically, write_json

def hardware() -> str:
    """What the run ran on, for metrics.json and the model card."""
    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{device}; torch {torch.__version__}; {process_state().num_processes} process(es)"



def launcher(args) -> str:
    """How the command starts: python, or torchrun with as many processes as --distributed's sizes multiply to."""
    if not args.trained_sizes:
        return "python -m "
    return f"torchrun --nproc_per_node {math.prod(args.trained_sizes.values())} -m "



def base_metrics(args, model, wall_time_s: float, data) -> dict:
    """The keys every metrics.json has."""
    return {
        "preset": args.preset,
        "preset_values": asdict(args.preset_values),
        "command": launcher(args) + " ".join([sys.modules["__main__"].__spec__.name if sys.modules["__main__"].__spec__ else sys.argv[0]]
                                             + [a for a in sys.argv[1:] if a != "--resume"]),  # how to run it again
        "seed": args.seed,
        "hardware": hardware(),
        "wall_time_s": round(wall_time_s, 1),
        "num_parameters": model.num_parameters(),
        "train_samples": len(data["train"]),
        "validation_samples": len(data["validation"]),
        "test_samples": len(data["test"]) if "test" in data else 0,
        # Trained under torchrun, sharded by DistributedConfig (evaluated in one process): the sizes, e.g. fsdp=2.
        **({"distributed": args.distributed} if args.trained_sizes else {}),
    }



def data_metrics(source: sources.Source) -> dict:
    """What metrics.json (and so the card) says of the data: its name, Hub id, and what was done to it."""
    facts = {"dataset": source.name, "data_notes": source.notes}
    if source.hub_dataset:
        facts["hub_dataset"] = source.hub_dataset
    return facts



def plot_training_curve(log_history: list[dict], path: Path, metric: str, title: str) -> None:
    """Training loss (and the validation metric) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    if train:
        ax.plot(*zip(*train), label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    evals = [(e["step"], e[metric]) for e in log_history if metric in e]
    if evals:
        other = ax.twinx()
        other.plot(*zip(*evals), "o-", color="tab:orange", label=metric.replace("eval_", "validation "))
        other.set_ylabel(metric.replace("eval_", "validation "))
        other.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def plot_attention(model, tokenizer, text: str, path: Path, max_tokens: int = 40) -> None:
    """Heat-map of the last layer's attention (mean over heads) on the first tokens of one text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backend = model.config._attn_implementation
    model.set_attn_implementation("eager")  # only the written-out path returns attention weights
    # Never more tokens than the model has positions (the tiny LM preset has 32).
    max_tokens = min(max_tokens, model.config.max_position_embeddings)
    inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens).to(model.device)
    with torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    model.set_attn_implementation(backend)
    weights = attentions[-1][0].mean(0).float().cpu()
    labels = [tokenizer.decode([i]).replace("\n", "\\n") for i in inputs["input_ids"][0]]
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.imshow(weights, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("attended token (key)")
    ax.set_ylabel("token (query)")
    ax.set_title("last layer attention, mean over heads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def finish(output: Path, trainer, tokenizer, metrics: dict, curve_metric: str, title: str, sample_text: str,
           attention_plot=plot_attention, extra_json: dict | None = None) -> None:
    """Write the Hub-ready folder: weights + code, tokenizer, metrics.json, the two plots, `extra_json` files (e.g.
    samples.json) and the model card.

    All of it is staged whole in work/publish first, then moved to the top level with metrics.json last: a kill
    leaves either no metrics.json there or a complete folder, and --resume finishes the move.
    `attention_plot(model, tokenizer, text, path)` draws attention.png (an encoder-decoder draws cross-attention)."""
    if not trainer.is_world_process_zero():
        return
    from hub_card.card import write_model_card

    enter_phase(output, "publish")

    def stage(folder: str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True)
        plot_training_curve(trainer.state.log_history, folder / "training_curve.png", curve_metric, title)
        attention_plot(trainer.model, tokenizer, sample_text, folder / "attention.png")
        trainer.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for name, data in (extra_json or {}).items():
            write_json(folder / name, data)
        write_json(folder / "metrics.json", metrics)
        write_model_card(folder, model_name=output.resolve().name)

    save_atomically(stage, output / WORK / PUBLISH)
    publish_staged(output)


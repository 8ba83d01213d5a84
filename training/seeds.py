"""One recipe command over several seeds, and its figures as mean ± standard deviation (what the README reports).

    python -m training.seeds classify --seeds 0 1 2 --output-dir runs/imdb-3-seeds [recipe flags, e.g. --preset cpu-best]

Each seed runs `python -m training.<recipe> <flags> --seed S --output-dir <output-dir>/seed-S`, one after another (a
seed whose folder is complete is not run again; an interrupted one continues with --resume). Then
`<output-dir>/summary.json` holds each figure's per-seed values, mean and sample standard deviation, with the
linear baselines of the same runs for a classifier, and whether every seed beat them; one line per figure is printed.
Each seed's metrics.json and model card then carry the same summary (`over_seeds`), so a published seed says what
the command gives over seeds, not only what its one run gave.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from .resume import write_json

# The figures summarised per recipe: (name, where in metrics.json, higher is better).
FIGURES = {
    "classify": [("accuracy", ("accuracy",), True), ("validation_accuracy", ("validation_accuracy",), True),
                 ("nbsvm-bi", ("baselines", "nbsvm-bi", "accuracy"), True),
                 ("tfidf-lr", ("baselines", "tfidf-lr", "accuracy"), True), ("wall_time_s", ("wall_time_s",), False)],
    "lm": [("bits_per_byte", ("bits_per_byte",), False), ("validation_bits_per_byte", ("validation_bits_per_byte",), False),
           ("wall_time_s", ("wall_time_s",), False)],
    "translate": [("exact_match", ("exact_match",), True), ("wall_time_s", ("wall_time_s",), False)],
}


def run_seed(recipe: str, flags: list[str], seed: int, output: Path) -> None:
    """The recipe's run for one seed, resumed where a folder was left unfinished; a failure stops everything."""
    if (output / "metrics.json").exists():
        return
    command = [sys.executable, "-m", f"training.{recipe}", *flags, "--seed", str(seed), "--output-dir", str(output)]
    if output.exists():
        command.append("--resume")
    print("$", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"seed {seed} failed: {' '.join(command)}")


def lookup(metrics: dict, path: tuple[str, ...]):
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def summarise(recipe: str, folders: dict[int, Path]) -> dict:
    """Per figure: the seeds' values, their mean and sample standard deviation (0 for one seed)."""
    metrics = {seed: json.loads((folder / "metrics.json").read_text()) for seed, folder in folders.items()}
    summary = {"recipe": recipe, "seeds": list(folders), "command": metrics[next(iter(metrics))].get("command"),
               "figures": {}}
    for name, path, _ in FIGURES[recipe]:
        values = {seed: lookup(m, path) for seed, m in metrics.items()}
        if any(value is None for value in values.values()):
            continue
        summary["figures"][name] = {"per_seed": values, "mean": statistics.fmean(values.values()),
                                    "std": statistics.stdev(values.values()) if len(values) > 1 else 0.0}
    if recipe == "classify" and "nbsvm-bi" in summary["figures"]:
        ours, nbsvm = summary["figures"]["accuracy"]["per_seed"], summary["figures"]["nbsvm-bi"]["per_seed"]
        summary["every_seed_beats_nbsvm_bi"] = all(ours[seed] > nbsvm[seed] for seed in ours)
    return summary


def record_in_folder(folder: Path, seed: int, summary: dict) -> None:
    """The summary over seeds into one seed's metrics.json (atomically) and its model card."""
    from hub_card.card import write_model_card

    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["over_seeds"] = {"seed": seed, **{key: value for key, value in summary.items() if key != "command"}}
    write_json(folder / "metrics.json", metrics)
    write_model_card(folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)  # --seed is a recipe flag
    parser.add_argument("recipe", choices=sorted(FIGURES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", required=True)
    args, flags = parser.parse_known_args(argv)
    for flag in ("--seed", "--output-dir", "--resume"):
        if flag in flags:
            raise SystemExit(f"error: {flag} is set by training.seeds for each run; leave it out of the recipe's flags")
    output = Path(args.output_dir)
    folders = {seed: output / f"seed-{seed}" for seed in args.seeds}
    for seed, folder in folders.items():
        run_seed(args.recipe, flags, seed, folder)
    summary = summarise(args.recipe, folders)
    write_json(output / "summary.json", summary)
    for seed, folder in folders.items():
        record_in_folder(folder, seed, summary)
    for name, figure in summary["figures"].items():
        print(f"{name}: {figure['mean']:.4f} ± {figure['std']:.4f} over seeds {args.seeds} "
              f"({', '.join(f'{v:.4f}' for v in figure['per_seed'].values())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

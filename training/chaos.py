"""Kill a recipe run at seeded random moments, resume it after each kill, and check it ends exactly like an
uninterrupted run: the same weights, bit for bit, and the same metrics.json (timings aside).

    python -m training.chaos classify --kills 50 [--seed 0] [--workdir runs/chaos] -- --preset tiny [recipe flags]

Each kill is a SIGKILL by PID (a crash, an OOM kill, a pre-empted job), after a delay drawn uniformly from
[0, the uninterrupted run's duration]; the run is then resumed with --resume. When a run finishes before its kill,
it is checked against the uninterrupted one and a new run starts, until `--kills` kills are done. The first kills
land one in each phase (data, tokenizer, pre-training, training, evaluation, writing the Hub-ready folder), at a
random moment after the run reaches it. After every kill, a folder holding metrics.json must be the finished
run. One more run has its newest checkpoint's weights truncated: it must fall back to the checkpoint before.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file

TIMINGS = {"wall_time_s", "bits_per_byte_s", "pipeline_tokens_per_s"}  # metrics that measure the run, not its result
PHASE_FILE = Path("work") / "phase.txt"


def start(recipe: str, output: Path, recipe_args: list[str], resume: bool, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", f"training.{recipe}", "--output-dir", str(output), *recipe_args]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen(command + (["--resume"] if resume else []), env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), cwd=Path(__file__).resolve().parent.parent)


def phase(output: Path, since: float = 0.0) -> str:
    """The phase the run wrote last (work/phase.txt), or "start-up" when this attempt has written none yet."""
    path = output / PHASE_FILE
    try:
        return path.read_text().strip() if path.stat().st_mtime >= since else "start-up"
    except OSError:
        return "start-up"


def result_metrics(metrics: dict) -> dict:
    """metrics.json without what measures the run rather than its result: the timings, and the baselines' seconds."""
    kept = {k: v for k, v in metrics.items() if k not in TIMINGS}
    if isinstance(kept.get("baselines"), dict):
        kept["baselines"] = {name: {k: v for k, v in scores.items() if k != "seconds"}
                             for name, scores in kept["baselines"].items()}
    return kept


def differences(reference: Path, output: Path) -> list[str]:
    """What differs between two finished runs: any weight (bit for bit), any metric but timings, any sample."""
    found = []
    if not (output / "metrics.json").exists():
        return [f"{output} has no metrics.json"]
    ours, theirs = load_file(output / "model.safetensors"), load_file(reference / "model.safetensors")
    if ours.keys() != theirs.keys():
        found.append("the weight names differ")
    found += [f"weight {k} differs" for k in ours.keys() & theirs.keys() if not torch.equal(ours[k], theirs[k])]
    for name in ("metrics.json", "samples.json"):
        if not (reference / name).exists():
            continue
        a, b = json.loads((reference / name).read_text()), json.loads((output / name).read_text())
        if name == "metrics.json":  # timings aside; the command differs only by its --output-dir
            a, b = result_metrics(a), result_metrics(b)
            b["command"] = b.get("command", "").replace(str(output), str(reference))
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) if isinstance(a, dict) else []
            found.append(f"{name} differs: {keys or 'samples'}")
    return found


def newest_checkpoint_weights(output: Path, training_phase: str) -> Path | None:
    """The weights of the newest checkpoint of a training phase (its checkpoints are in work/<phase>/), if any."""
    weights = list(output.glob(f"work/{training_phase}/checkpoint-*/model.safetensors"))
    return max(weights, key=lambda p: int(p.parent.name.split("-")[-1])) if weights else None


def chaos(recipe: str, workdir: Path, recipe_args: list[str], kills: int, seed: int = 0, log=print) -> dict:
    """The uninterrupted run, then killed-and-resumed runs: one kill in each phase the uninterrupted run went
    through (at a random moment after the run reaches it), then kills after random delays, `kills` in all."""
    workdir.mkdir(parents=True, exist_ok=True)
    reference = workdir / "reference"
    began, phases = time.time(), []
    process = start(recipe, reference, recipe_args, False, workdir / "reference.log")
    while process.poll() is None:  # note the phases as the run goes through them
        if (now := phase(reference)) != "start-up" and now not in phases:
            phases.append(now)
        time.sleep(0.005)
    if process.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed: {(workdir / 'reference.log').read_text()[-3000:]}")
    duration = time.time() - began
    log(f"uninterrupted run: {duration:.1f} s, phases {phases}")

    rng = random.Random(seed)
    phase_targets = list(phases)  # first one kill in each phase, then kills after random delays
    report = {"recipe": recipe, "kills": 0, "runs": 0, "phases": Counter(), "problems": [], "truncated": None,
              "fell_back": False, "reference_s": round(duration, 1), "phases_of_the_run": phases}
    output, resume, attempt = None, False, 0
    while resume or phase_targets or report["kills"] < kills:
        if not resume:
            output = workdir / f"run-{report['runs']}"
            report["runs"] += 1
        attempt += 1
        log_file = workdir / f"attempt-{attempt}.log"
        started = time.time()
        process = start(recipe, output, recipe_args, resume, log_file)
        if phase_targets:
            target = phase_targets.pop(0)
        else:  # None: a kill after a random delay; "none": the kills are done, this attempt runs to its end
            target = None if report["kills"] < kills else "none"
        if target in phases:  # at or past the target phase, then a random moment later
            while process.poll() is None and (now := phase(output, started)) not in phases[phases.index(target):]:
                time.sleep(0.005)
            delay = rng.uniform(0, 0.05)  # the shortest phases (data, tokenizer) last a tenth of a second
        else:
            delay = None if target == "none" else rng.uniform(0, duration)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            where = phase(output, started)
            process.send_signal(signal.SIGKILL)
            process.wait()
            report["kills"] += 1
            report["phases"][where] += 1
            log(f"kill {report['kills']}: in {where}")
            # Whatever the moment, a folder with metrics.json must be the finished run.
            if (output / "metrics.json").exists() and (found := differences(reference, output)):
                report["problems"] += [f"killed in {where}, the folder looks complete but {d}" for d in found]
            resume = True
            continue
        text = log_file.read_text()
        if process.returncode != 0 or "Traceback" in text:
            report["problems"].append(f"attempt {attempt} failed (exit {process.returncode}): {text[-2000:]}")
            break
        found = differences(reference, output)
        report["problems"] += [f"run {report['runs']}: {d}" for d in found]
        log(f"run {report['runs']} finished: " + ("identical to the uninterrupted run" if not found else "; ".join(found)))
        resume = False
    report["phases"] = dict(report["phases"])
    truncated_checkpoint_case(recipe, workdir, recipe_args, reference, phases, report, log)
    return report


def truncated_checkpoint_case(recipe, workdir, recipe_args, reference, phases, report, log) -> None:
    """Kill a run once its last training phase has a whole checkpoint, cut that checkpoint's weights in half (a disk
    that lost the end of the file), resume: the run must say it skips it, fall back, and still end identical."""
    training = [p for p in phases if (reference / "work" / p).is_dir()][-1]
    output = workdir / "truncated"
    process = start(recipe, output, recipe_args, False, workdir / "truncated-1.log")
    while process.poll() is None and not list(output.glob(f"work/{training}/checkpoint-*/checkpoint-complete.json")):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    weights = newest_checkpoint_weights(output, training)
    if weights is None:
        report["problems"].append(f"the run ended before its {training} phase saved a checkpoint")
        return
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    report["truncated"] = str(weights.relative_to(output))
    log(f"truncated {report['truncated']}")
    process = start(recipe, output, recipe_args, True, workdir / "truncated-2.log")
    process.wait()
    text = (workdir / "truncated-2.log").read_text()
    report["fell_back"] = "Skipping checkpoint" in text
    if process.returncode != 0 or "Traceback" in text:
        report["problems"].append(f"the run after truncation failed (exit {process.returncode}): {text[-2000:]}")
    elif not report["fell_back"]:
        report["problems"].append(f"the resumed run did not say it skipped the truncated {report['truncated']}")
    report["problems"] += [f"after truncation: {d}" for d in differences(reference, output)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=["classify", "lm", "translate"])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/chaos")
    argv = sys.argv[1:] if argv is None else argv
    ours, recipe_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)  # after --: the recipe's own flags
    workdir = Path(args.workdir) / args.recipe
    report = chaos(args.recipe, workdir, recipe_args, args.kills, args.seed)
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

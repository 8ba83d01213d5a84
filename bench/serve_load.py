"""Serving load test: scratchformer and transformers' GPT-2 at the same size behind `transformers serve`, one request at
a time (plain) and with continuous batching (cb), under concurrent streaming clients. 127.0.0.1 only, bounded time.

Usage: python -m bench.serve_load [--out PATH] [--size small|tiny] [--clients 8] [--requests-per-client 4]
                                  [--new-tokens 32] [--budget-s 60] [--models scratchformer,gpt2] [--modes plain,cb]
                                  [--cb-num-blocks 64] [--cb-max-batch-tokens 256] [--server-threads N] [--logs DIR]

For each model x mode it saves the model (random weights, seeded) with a byte-level BPE tokenizer trained here on a
small built-in corpus, starts its server on a free 127.0.0.1 port (scratchformer: `python -m scratchformer.serve DIR`;
GPT-2: `transformers serve DIR`; cb adds `--continuous-batching --cb-num-blocks N --cb-max-batch-tokens N`), sends one
warm-up request, then runs --clients threads that each stream (openai client, /v1/completions, greedy, max_tokens
--new-tokens) up to --requests-per-client completions of prompts of 3 to ~40 tokens, all at once. The configurations
share --budget-s, servers' starts included: once a server answers, its load phase gets an equal share of what is
left after the starts still to come (estimated as long as this one's). Each client sends its first request whatever
the time and starts no other after the phase ends, so a short phase shows as fewer requests, not a longer run (a
start slower than 90 s fails that configuration).

Reported per configuration (table on stdout, JSON at --out): requests/s and generated tokens/s over the load phase
(first request sent to last answer received), p50/p99 latency of a whole request, p50 time to first token, server
start seconds, and `correct`: how many answers equal greedy generate() of the same weights on that prompt alone
(decoded as tests/tools/test_serve.py does). The exit status is 1 if any answer differs, or a configuration served none.

Models: bench/models.py's sizes (`small` = the cpu-small preset: hidden 128, 2 layers, 4 heads, MLP 512, 256
positions; `tiny` = its quick size with 128 positions, for smoke runs), fp32, learned positions, tied embeddings, exact GELU, SDPA, the
tokenizer's vocabulary; GPT2LMHeadModel gets the same dimensions (bench.models.gpt2_config). The end-of-sequence
token is disabled, so every answer is --new-tokens long. Special tokens and the byte tokens that are not printable
ASCII get a zero embedding row: with tied weights their logit is 0, below the largest of the others, so greedy text
is plain ASCII that decodes the same whole or streamed.

On CPU the cb flags matter: without them transformers sizes the paged cache for a GPU's memory and its start-up
warmup takes tens of seconds. The measurement is meant for a quiet machine; on a shared one, run a smoke test only,
e.g. `python -m bench.serve_load --size tiny --clients 2 --requests-per-client 2 --new-tokens 8 --budget-s 40`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import transformers

from bench.models import QUICK_SIZES, SIZES, build_model
from scratchformer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("scratchformer", "gpt2")
MODES = ("plain", "cb")
SIDE = {"scratchformer": "ours", "gpt2": "theirs"}  # bench.models.build_model's names

WORDS = ("the film was a great story with fine acting and a dull plot but i loved every minute of it so "
         "honestly overall the camera work is well done and the music moves a small town family").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic ASCII sentences: the tokenizer's training text and the prompts' source."""
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(n):
        length = int(torch.randint(3, 30, (), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        texts.append(" ".join(WORDS[i] for i in picks) + ".")
    return texts


def prompts(count: int = 16) -> list[str]:
    """Prompts of 3 to ~40 tokens, cut from the corpus at word boundaries."""
    texts = corpus(2 * count, seed=1)
    return [" ".join(" ".join(texts[2 * i:2 * i + 2]).split()[: 2 + (i * 5) % 28]) for i in range(count)]


def plain_ascii_ids(tokenizer) -> list[int]:
    """Ids whose text is not printable ASCII (special tokens, control and high bytes): kept out of greedy output."""
    special = set(tokenizer.all_special_ids)
    bad = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if token_id in special or not text or not all(32 <= ord(c) < 127 for c in text):
            bad.append(token_id)
    return bad


def build_folder(name: str, size, tokenizer, folder: Path, seed: int = 0):
    """A seeded random model of `size` saved with the tokenizer; returns the model (eval mode)."""
    model = build_model(SIDE[name], "lm", replace(size, vocab_size=len(tokenizer)), seed=seed).eval()
    if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise RuntimeError(f"{name}: the output layer is not tied to the embeddings")
    with torch.no_grad():
        model.get_input_embeddings().weight[plain_ascii_ids(tokenizer)] = 0.0
    model.generation_config.eos_token_id = None  # every answer is max_tokens long
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def expected_text(model, tokenizer, prompt: str, new_tokens: int) -> tuple[str, int]:
    """Greedy generate() of the prompt alone: the decoded continuation (as tests/tools/test_serve.py) and its token count."""
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True), int(new.numel())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(name: str, folder: Path, port: int, mode: str, args) -> list[str]:
    if name == "scratchformer":
        command = [sys.executable, "-m", "scratchformer.serve", str(folder)]
    else:  # transformers' own CLI, as `transformers serve` runs it
        command = [sys.executable, "-c", "from transformers.cli.transformers import app; app()", "serve", str(folder)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    if mode == "cb":
        command += ["--continuous-batching", "--cb-num-blocks", str(args.cb_num_blocks),
                    "--cb-max-batch-tokens", str(args.cb_max_batch_tokens)]
    return command


class Server:
    """A server process in a session of its own (its model process too, from transformers 5.25): stopped as a group."""

    def __init__(self, command: list[str], log_path: Path, threads: int | None):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def wait_healthy(self, url: str, deadline: float) -> None:
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
                if time.time() > deadline:
                    raise TimeoutError("the server did not answer /health in 90 s")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group this script started, and only it
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def stream_one(client, model_id: str, prompt: str, new_tokens: int) -> dict:
    """One streamed greedy completion: its text, latency, time to first token and token count (from usage)."""
    start = time.perf_counter()
    first, pieces, tokens = None, [], None
    chunks = client.completions.create(model=model_id, prompt=prompt, max_tokens=new_tokens, stream=True,
                                       stream_options={"include_usage": True})  # greedy: the models' default
    for chunk in chunks:
        if chunk.choices:
            text = chunk.choices[0].text
            if text and first is None:
                first = time.perf_counter() - start
            pieces.append(text)
        if getattr(chunk, "usage", None) is not None:
            tokens = chunk.usage.completion_tokens
    return {"text": "".join(pieces), "latency_s": time.perf_counter() - start, "ttft_s": first, "tokens": tokens,
            "end": time.perf_counter()}


def run_load(url: str, model_id: str, work: list[str], expected: dict, args, deadline: float) -> dict:
    """--clients threads, each streaming up to --requests-per-client completions (prompts round-robin)."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed-locally", timeout=120, max_retries=0)
    stream_one(client, model_id, work[0], args.new_tokens)  # warm-up, not counted
    results, errors, lock = [], [], threading.Lock()

    def client_loop(index: int) -> None:
        for k in range(args.requests_per_client):
            if k and time.time() > deadline:  # the first request goes whatever the time: every client is measured
                return
            prompt = work[(index * args.requests_per_client + k) % len(work)]
            try:
                result = stream_one(client, model_id, prompt, args.new_tokens)
            except Exception as error:  # noqa: BLE001 (reported, not raised: the other clients go on)
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:300])
                continue
            result["prompt"] = prompt
            with lock:
                results.append(result)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.time()) + 120)
    wall = (max(r["end"] for r in results) - start) if results else None
    tokens = sum(r["tokens"] if r["tokens"] is not None else expected[r["prompt"]][1] for r in results)
    wrong = [{"prompt": r["prompt"], "got": r["text"], "expected": expected[r["prompt"]][0]}
             for r in results if r["text"] != expected[r["prompt"]][0]]
    latencies = [r["latency_s"] for r in results]
    return {
        "requests": len(results),
        "errors": errors,
        "load_seconds": wall,
        "requests_per_s": len(results) / wall if wall else None,
        "tokens_per_s": tokens / wall if wall else None,
        "generated_tokens": tokens,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "ttft_p50_s": percentile([r["ttft_s"] for r in results if r["ttft_s"] is not None], 50),
        "correct": len(results) - len(wrong),
        "wrong": wrong[:5],
    }


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--size", choices=("small", "tiny"), default="small")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--budget-s", type=float, default=60.0, help="all configurations together, starts included")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cb-num-blocks", type=int, default=64, help="paged cache blocks (256 tokens each)")
    parser.add_argument("--cb-max-batch-tokens", type=int, default=256)
    parser.add_argument("--server-threads", type=int, help="OMP/MKL threads of each server (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logs", type=Path, help="keep each server's log in this folder (default: discarded)")
    args = parser.parse_args(argv)
    models, modes = args.models.split(","), args.modes.split(",")
    if not set(models) <= set(MODELS) or not set(modes) <= set(MODES):
        parser.error(f"--models from {MODELS}, --modes from {MODES}")
    # tiny: bench.models' quick size, with room for the longest prompt and answer
    size = SIZES["small"] if args.size == "small" else replace(QUICK_SIZES["small"], seq_len=128)
    started = time.time()

    tokenizer = train_tokenizer(corpus(), vocab_size=1000, min_frequency=2, model_max_length=size.seq_len)
    work = prompts()
    longest = max(len(tokenizer(p)["input_ids"]) for p in work) + args.new_tokens
    if longest > size.seq_len:
        parser.error(f"a prompt and its answer take {longest} positions; the models have {size.seq_len}")
    configurations = [(name, mode) for name in models for mode in modes]
    report = {
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "size": {**size.__dict__, "vocab_size": len(tokenizer)}, "prompts": len(work),
                     "prompt_tokens": [len(tokenizer(p)["input_ids"]) for p in work]},
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "results": {},
    }
    failed = False
    with TemporaryDirectory(prefix="serve_load_") as tmp:
        expected, folders = {}, {}
        for name in models:  # weights and the greedy answers they give, before any timing
            folders[name] = Path(tmp) / name
            model = build_folder(name, size, tokenizer, folders[name], seed=args.seed)
            expected[name] = {p: expected_text(model, tokenizer, p, args.new_tokens) for p in work}
        end = started + args.budget_s
        for index, (name, mode) in enumerate(configurations):
            slice_start = time.time()
            port = free_port()
            logs = args.logs or Path(tmp)
            logs.mkdir(parents=True, exist_ok=True)
            server = Server(server_command(name, folders[name], port, mode, args), logs / f"{name}-{mode}.log",
                            args.server_threads)
            url = f"http://127.0.0.1:{port}"
            try:
                server.wait_healthy(url, deadline=slice_start + 90)
                start_s = time.time() - slice_start
                later = len(configurations) - index - 1  # configurations still to start after this one
                deadline = time.time() + max(0.0, end - time.time() - later * start_s) / (later + 1)
                result = run_load(url, str(folders[name]), work, expected[name], args, deadline)
                result["server_start_s"] = start_s
            except Exception as error:  # noqa: BLE001 (one configuration failing still reports the others)
                result = {"requests": 0, "error": f"{type(error).__name__}: {error}"[-2000:]}
            finally:
                server.stop()
            report["results"][f"{name}/{mode}"] = result
            failed |= result["requests"] == 0 or result.get("correct") != result["requests"]
    report["total_seconds"] = time.time() - started

    header = f"{'configuration':<20} {'requests':>8} {'req/s':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} " \
             f"{'ttft50 s':>8} {'start s':>7} {'correct':>8}"
    print(header)
    print("-" * len(header))
    for key, r in report["results"].items():
        if "error" in r:
            print(f"{key:<20} failed: {r['error'][:200]}")
            continue
        print(f"{key:<20} {r['requests']:>8} {fmt(r['requests_per_s'], '7.2f')} {fmt(r['tokens_per_s'], '8.1f')} "
              f"{fmt(r['latency_p50_s'], '7.3f')} {fmt(r['latency_p99_s'], '7.3f')} {fmt(r['ttft_p50_s'], '8.3f')} "
              f"{r['server_start_s']:7.1f} {r['correct']:>4}/{r['requests']:<3}")
        for error in r["errors"][:3]:
            print(f"    client error: {error}")
        for wrong in r["wrong"][:2]:
            print(f"    differs from generate(): {wrong}")
    print(f"{args.clients} clients x {args.requests_per_client} requests, {args.new_tokens} new tokens, "
          f"size {args.size}, transformers {transformers.__version__}, {report['total_seconds']:.0f} s in all")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

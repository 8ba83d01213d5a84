"""Export a saved scratchformer model to ONNX, run it in onnxruntime.

    python -m scratchformer.export DIR OUT_DIR

A classifier (or masked LM, or bare model) becomes OUT_DIR/model.onnx: (input_ids, attention_mask) -> logits.
A causal LM becomes two graphs that decode with a KV cache, as transformers' own exporters split it:
prefill.onnx (input_ids, attention_mask, position_ids) -> (logits, keys and values of every layer) and
decode.onnx (one new token per row, the mask so far, its position, the cache) -> (logits, the grown cache).
`OnnxGreedyDecoder` runs that loop in onnxruntime.

Why torch.onnx.export(dynamo=True) and not transformers.exporters: the latter first appeared in transformers 5.24
(experimental), and we support 5.23 too; torch's exporter is what it wraps.
"""

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, GenerationMixin, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification
from transformers.cache_utils import DynamicCache

from .compat import cache_of

HEADS = {
    "ScratchformerForSequenceClassification": AutoModelForSequenceClassification,
    "ScratchformerForCausalLM": AutoModelForCausalLM,
    "ScratchformerForMaskedLM": AutoModelForMaskedLM,
    "ScratchformerModel": AutoModel,
}  # the heads this exports, by the architecture name config.json records


def flat_cache(cache) -> tuple[torch.Tensor, ...]:
    """keys_0, values_0, keys_1, ... of a cache: ONNX graphs take and give plain tensors."""
    return tuple(t for layer in cache.layers for t in (layer.keys, layer.values))


class Logits(nn.Module):
    """(input_ids, attention_mask) -> logits (or last hidden state): the forward a classifier serves."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


class Prefill(nn.Module):
    """The prompt -> its next-token logits and the cache of every layer."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1)
        return (out.logits, *flat_cache(cache_of(out)))


class Decode(nn.Module):
    """One new token per row, with the cache so far -> its logits and the cache grown by one position."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=True)
        return (out.logits, *flat_cache(cache_of(out)))


def cache_names(num_layers: int, kind: str) -> list[str]:
    return [f"{kind}.{i}.{part}" for i in range(num_layers) for part in ("keys", "values")]


def _export(module, args: tuple, path: Path, input_names, output_names, dynamic_shapes) -> None:
    torch.onnx.export(module, args, str(path), dynamo=True, input_names=input_names, output_names=output_names,
                      dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)


def export(model, out: Path) -> list[Path]:
    """Write the ONNX graph(s) of `model` into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch, length = torch.export.Dim("batch", max=1024), torch.export.Dim("length", max=model.config.max_position_embeddings)
    ids = torch.full((2, 5), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # padded: the graph must not specialise on a mask of ones
    if model.config.is_encoder_decoder:
        raise ValueError("ONNX export of the encoder-decoder is not written yet: export a classifier or a causal LM")
    if not isinstance(model, GenerationMixin):  # one graph: inputs -> logits
        _export(Logits(model), (ids, mask), out / "model.onnx", ["input_ids", "attention_mask"], ["logits"],
                ({0: batch, 1: length}, {0: batch, 1: length}))
        return [out / "model.onnx"]
    layers = model.config.num_hidden_layers
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    _export(Prefill(model), (ids, mask, positions), out / "prefill.onnx", ["input_ids", "attention_mask", "position_ids"],
            ["logits", *cache_names(layers, "present")], ({0: batch, 1: length},) * 3)
    with torch.no_grad():
        past = Prefill(model)(ids, mask, positions)[1:]
    step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    past_length = torch.export.Dim("past", max=model.config.max_position_embeddings - 1)
    total = past_length + 1
    _export(Decode(model), (ids[:, :1], step_mask, positions[:, -1:] + 1, *past), out / "decode.onnx",
            ["input_ids", "attention_mask", "position_ids", *cache_names(layers, "past")],
            ["logits", *cache_names(layers, "present")],
            ({0: batch}, {0: batch, 1: total}, {0: batch}, ({0: batch, 2: past_length},) * (2 * layers)))
    return [out / "prefill.onnx", out / "decode.onnx"]


class OnnxGreedyDecoder:
    """Greedy decoding with the exported prefill/decode graphs in onnxruntime (what generate(do_sample=False) does)."""

    def __init__(self, folder: Path):
        import onnxruntime

        self.prefill = onnxruntime.InferenceSession(str(Path(folder) / "prefill.onnx"), providers=["CPUExecutionProvider"])
        self.decode = onnxruntime.InferenceSession(str(Path(folder) / "decode.onnx"), providers=["CPUExecutionProvider"])

    def __call__(self, input_ids, attention_mask, max_new_tokens: int):
        import numpy as np

        ids, mask = np.asarray(input_ids, dtype=np.int64), np.asarray(attention_mask, dtype=np.int64)
        positions = np.clip(mask.cumsum(-1) - 1, 0, None)
        logits, *cache = self.prefill.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": positions})
        for step in range(max_new_tokens):
            next_ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
            ids = np.concatenate([ids, next_ids], axis=1)
            if step == max_new_tokens - 1:
                break
            mask = np.concatenate([mask, np.ones_like(next_ids)], axis=1)
            feed = {"input_ids": next_ids, "attention_mask": mask, "position_ids": mask.sum(-1, keepdims=True) - 1}
            names = [i.name for i in self.decode.get_inputs()][3:]
            feed.update(dict(zip(names, cache)))
            logits, *cache = self.decode.run(None, feed)
        return ids


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scratchformer.export", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved scratchformer folder (or Hub repo id)")
    parser.add_argument("out", help="the folder to write the .onnx file(s) into")
    args = parser.parse_args(argv)
    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    architecture = next((a for a in (config.architectures or []) if a in HEADS), None)
    if config.model_type != "scratchformer" or architecture is None:
        parser.error(f"{args.model} is not a saved scratchformer model (model_type={config.model_type!r})")
    model = HEADS[architecture].from_pretrained(args.model, trust_remote_code=True)
    written = export(model, Path(args.out))
    (Path(args.out) / "export.json").write_text(json.dumps({"architecture": architecture,
                                                            "files": [p.name for p in written]}, indent=2) + "\n")
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()

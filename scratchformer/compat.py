"""Every difference between the transformers releases we support (5.23 onwards), in one place (the speed machinery
is cpu_kernels.py's).

transformers 5.24 renamed the KV cache's argument and output field from `past_key_values` to `cache`: generate()
passes `cache=` to forward and reads `outputs.cache`, where 5.23 passes and reads `past_key_values`. The model says
`cache` throughout; these helpers translate at its edges. Continuous batching's paged cache is written by 5.23's
attention functions, and by the model from 5.25 (attention_function_writes_cache). This file is saved with the model
code, so remote-code users get the same translation for whatever release they have.
"""

import functools
import inspect

from transformers.generation.continuous_batching.cache import PagedAttentionCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_outputs import CausalLMOutputWithPast

# The name the installed release uses, told by feature (is `cache` a field of the built-in outputs?), not by version.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
LEGACY_CACHE_NAME = "past_key_values"


def cache_field(cache) -> dict:
    """The cache as a keyword of a built-in output class, under the field name the installed release has."""
    return {CACHE_NAME: cache}


def cache_of(outputs):
    """The cache a model output carries, read under the installed release's field name (no deprecation warning)."""
    return getattr(outputs, CACHE_NAME)


def accepts_either_cache_name(forward):
    """Let a forward whose KV-cache parameter is `cache` also be called with `past_key_values=`, and show callers
    (generate() and Trainer read forward's signature) the parameter under the installed release's name."""
    signature = inspect.signature(forward)
    parameters = [p.replace(name=CACHE_NAME) if p.name == "cache" else p for p in signature.parameters.values()]

    @functools.wraps(forward)
    def forward_with_either_name(*args, **kwargs):
        if LEGACY_CACHE_NAME in kwargs:
            legacy = kwargs.pop(LEGACY_CACHE_NAME)
            if legacy is not None and kwargs.get("cache") is not None:
                raise ValueError("Pass the KV cache once: as `cache` or as `past_key_values`, not both")
            if legacy is not None or "cache" not in kwargs:
                kwargs["cache"] = legacy
        return forward(*args, **kwargs)

    forward_with_either_name.__signature__ = signature.replace(parameters=parameters)
    return forward_with_either_name


# Continuous batching (paged attention) ------------------------------------------------------------------------------
#
# transformers' continuous batching (model.generate_batch, `transformers serve --continuous-batching`) packs a step's
# requests into one row and passes forward a PagedAttentionCache as `cache=`, with position_ids placing each token in
# its own request. Who writes the step's keys and values into that cache differs between releases: in 5.23 the
# attention functions do (sdpa, paged|eager and flash take the cache as `cache=` and call its update), and a model
# that also wrote them would attend over its keys twice; from 5.25, as with any other cache, the model calls
# cache.update(..., kwargs=kwargs) and the attention functions leave it alone. Told by feature (does the sdpa function
# take a `cache` argument?), not by version.

ATTENTION_FUNCTIONS_WRITE_PAGED_CACHE = "cache" in inspect.signature(sdpa_attention_forward).parameters


def is_paged_cache(cache) -> bool:
    """Whether `cache` is continuous batching's paged cache: many requests packed in one row, no one length."""
    return isinstance(cache, PagedAttentionCache)


def attention_function_writes_cache(cache) -> bool:
    """Whether the attention function, not the model, writes this step's keys and values into `cache`: a paged cache
    under a release (5.23) whose attention functions update it themselves. The model then hands the cache to the
    function as `cache=` and does not call cache.update."""
    return ATTENTION_FUNCTIONS_WRITE_PAGED_CACHE and is_paged_cache(cache)


def update_cache(cache, key, value, layer_idx: int, kwargs: dict):
    """This step's keys and values appended to `cache`; returns every key and value to attend over, [B, h, past + L, D].
    Where the attention function writes the cache itself (attention_function_writes_cache), it gets the cache in
    `kwargs` instead. kwargs reach the cache: a paged cache (continuous batching) reads its write indices there."""
    if attention_function_writes_cache(cache):
        kwargs["cache"] = cache
        return key, value
    return cache.update(key, value, layer_idx, kwargs=kwargs)

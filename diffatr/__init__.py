"""diffatr: an embedding-cache-first trainer and evaluator for audio-text retrieval.

Stages are subpackages and import one way: cli, api -> experiments -> {extract, contrastive,
diffusion_head, coattention} -> evaluate -> cache. Only `diffatr.cache` touches HDF5.

The Python API (`diffatr.api`) is exported from here lazily (PEP 562): `import diffatr` stays
cheap, and torch is imported when the first API name is used.

    import diffatr
    cache = diffatr.open_cache("test.h5")
    print(diffatr.evaluate(cache, head="head.pt", topk=32))
"""

__version__ = "0.1.0"

# The names `diffatr.api` exports; `diffatr.evaluate` is also the evaluation stage's package,
# which is callable for this reason (see diffatr/evaluate/__init__.py).
_API = (
    "CacheView",
    "CoAttentionHead",
    "ConfigError",
    "DiffusionHead",
    "Ranks",
    "Result",
    "SearchResult",
    "UserError",
    "cache_from_arrays",
    "evaluate",
    "export",
    "import_arrays",
    "load_head",
    "metrics",
    "open_cache",
    "rank",
    "search",
)
_ERRORS = ("UserError", "ConfigError")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _ERRORS:  # no torch behind these: catching them costs nothing
        from . import errors

        return getattr(errors, name)
    if name == "evaluate":
        import importlib

        return importlib.import_module(".evaluate", __name__)
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})

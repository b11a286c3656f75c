"""diffatr's Python API: the small, stable surface `import diffatr` exports.

One module per concern: caches.py (open a cache, write one from arrays), evaluation.py
(evaluate: metrics and per-query ranks), ranking.py (rank, metrics over arrays), heads.py
(load_head and the heads' rerank), search.py (search), exchange.py (export, import_arrays).
The CLI calls the same functions, so the two cannot disagree. Bad input raises
`diffatr.UserError` (or a subclass) with the CLI's one-line message; nothing here exits.
"""

from ..errors import ConfigError, UserError
from .caches import CacheView, cache_from_arrays, open_cache
from .evaluation import Result, evaluate
from .exchange import export, import_arrays
from .heads import CoAttentionHead, DiffusionHead, load_head
from .ranking import Ranks, metrics, rank
from .search import SearchResult, search

__all__ = [
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
]

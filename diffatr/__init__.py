"""diffatr: an embedding-cache-first trainer and evaluator for audio-text retrieval.

Stages are subpackages and import one way: cli -> {extract, contrastive, diffusion_head,
coattention, evaluate} -> cache. Only `diffatr.cache` touches HDF5.
"""

__version__ = "0.1.0"

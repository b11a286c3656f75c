"""Experiments over caches: the paper's tables and the ablations it leaves out, in one command.

grids.py (the tables), config.py (datasets, seeds, base settings), store.py (run folders, resume),
runner.py (phase 1 -> phase 2 -> evaluation for every row and seed), measure.py (metrics and
recall curves of one ranking), tables.py (mean +- std tables, JSON, CSV), figures.py (the
pictures), schedule.py and claims.py (the runs spread over torchrun's processes, claimed
through the file system). This package sits above the stages: it imports contrastive,
diffusion_head and evaluate; nothing imports it but the CLI and the demo. Importing it is
cheap (no torch): the runner lives in `diffatr.experiments.runner`.
"""

from .grids import TABLE_NAMES, TABLES

__all__ = ["TABLES", "TABLE_NAMES"]

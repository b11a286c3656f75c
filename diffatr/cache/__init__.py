"""The HDF5 cache format (v1): writing, reading, checking, describing, exporting, importing
other tools' arrays, and the synthetic default split. The only package that touches h5py."""

from .export import FORMATS as EXPORT_FORMATS
from .export import export
from .importer import ClipNames, ImportConfig, import_embeddings
from .info import describe, format_info
from .reader import Cache, CacheTensors, Rows, load_tensors
from .schema import FORMAT, FORMAT_VERSION, NO_CLIP, CacheError
from .synthetic import SyntheticConfig, make_synthetic
from .synthetic_backbone import BackboneSyntheticConfig, make_synthetic_backbone
from .synthetic_sequences import SequenceSyntheticConfig, make_synthetic_sequences
from .verify import Report, verify
from .writer import CacheWriter

__all__ = [
    "EXPORT_FORMATS",
    "FORMAT",
    "FORMAT_VERSION",
    "NO_CLIP",
    "BackboneSyntheticConfig",
    "Cache",
    "CacheError",
    "CacheTensors",
    "CacheWriter",
    "ClipNames",
    "ImportConfig",
    "Report",
    "Rows",
    "SequenceSyntheticConfig",
    "SyntheticConfig",
    "describe",
    "export",
    "format_info",
    "import_embeddings",
    "load_tensors",
    "make_synthetic",
    "make_synthetic_backbone",
    "make_synthetic_sequences",
    "verify",
]

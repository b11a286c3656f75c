"""The optional libraries of the `export` extra (pyarrow, safetensors, faiss-cpu), imported on
first use with an error that says how to install them.

Reads and writes nothing.
"""

import importlib
from types import ModuleType

from ..errors import UserError

# module name -> the PyPI package that provides it
PACKAGES = {"pyarrow": "pyarrow", "safetensors": "safetensors", "faiss": "faiss-cpu"}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise a one-line UserError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{purpose} needs {PACKAGES.get(module, module)}, which is not installed: "
            "pip install 'diffatr[export]' (or pip install -e '.[export]' in a checkout)"
        ) from None

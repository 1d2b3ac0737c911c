"""inspector: vet prompt-tuned CLIP models (CoOp / CoCoOp) for backdoors by OOD trigger inversion."""

__version__ = "0.1.0"  # keep in step with pyproject.toml

"""reca-eval: an evaluation-first harness and compact trainer for Reconstruction Alignment (RecA)."""

__version__ = "0.1.0"

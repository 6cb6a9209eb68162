"""Diagnostics of a checkpoint: is it ready for RecA? (``reca-eval diagnose ...``)."""

"""fraudstream: the running system (stream worker, scoring, explanations, analyst UI, CLI)."""

__version__ = "0.1.0"

"""Readers (and, for the tiny fixtures, writers) of every supported weight container."""

from .dit import LoadedDiT, load_dit, sniff

__all__ = ["LoadedDiT", "load_dit", "sniff"]

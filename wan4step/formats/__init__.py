"""Readers (and, for the tiny fixtures, writers) of every supported weight container."""

from .dit import MODES, LoadedDiT, load_dit, sniff
from .scan import DiTScan, scan_dit

__all__ = ["MODES", "DiTScan", "LoadedDiT", "load_dit", "scan_dit", "sniff"]

"""Tiny models with the real architectures, generated deterministically.

They are the demo's embedded default (no download needed) and every test's
fixture: the same code paths as the 14B model, at a size a CPU runs in seconds.
"""

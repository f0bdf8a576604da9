"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse

__all__ = ["threads_arg"]


def threads_arg(text: str) -> int:
    """``--threads``: a whole number >= 0 (0 = automatic)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = automatic), got {n}")
    return n

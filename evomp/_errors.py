from __future__ import annotations

__all__ = ["EvompError", "SpecError"]


class EvompError(ValueError):
    """An error the user can fix; the CLI prints its message without a traceback."""


class SpecError(EvompError):
    """A run specification that cannot be used; the message names the bad key."""

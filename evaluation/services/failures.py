"""How a failure the user cannot fix is worded (and one they can is not called a bug)."""

from __future__ import annotations

from evaluation.engine.storage import storage_error


def internal_error(doing: str, exc: Exception) -> str:
    # A full, read-only or forbidden disk met anywhere (not only where the engine names it)
    # is still the machine's problem: say which, never "a bug".
    if isinstance(exc, OSError) and (named := storage_error(exc)) is not None:
        return str(named)
    return (
        f"Internal error while {doing} ({type(exc).__name__}: {exc}). "
        "This is a bug in Likeness, not in your inputs; the worker log has the details."
    )

"""User-facing errors: what is wrong, with which input, and what to do about it."""

from __future__ import annotations


class InputError(Exception):
    """A bad input (file, setting, pool) that the user can fix; shown without a traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def cut(text: str, limit: int = 60) -> str:
    """Text from an untrusted file (a name, a reason) for a message, cut when long."""
    return text if len(text) <= limit else text[:limit] + "…"


def shown(value: object, limit: int = 60) -> str:
    """``value`` as a message quotes it (repr), cut to about ``limit`` characters: headers are untrusted, and a
    refusal must not print a 10,000-character field in full."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"

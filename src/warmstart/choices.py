"""The values an option takes, declared on the option: one grammar checks them, ``--help`` lists them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from warmstart.errors import UsageError


@dataclass(frozen=True)
class Choices:
    """The spellings an option accepts. One ending in ``:N`` stands for that prefix and any integer
    (``cuda:N``: ``cuda:0``, ``cuda:1``, ...); ``fold_case`` accepts any case and returns lower case."""

    values: tuple[str, ...]
    fold_case: bool = False

    def __iter__(self):
        return iter(self.values)

    @property
    def metavar(self) -> str:
        """How ``--help`` shows the option's value: ``a|b|c``."""
        return "|".join(self.values)

    def matches(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        v = value.lower() if self.fold_case else value
        return any(v == c or (c.endswith(":N") and re.fullmatch(re.escape(c[:-1]) + r"\d+", v)) for c in self.values)

    def check(self, flag: str, value: object) -> str:
        """``value`` (lower case under ``fold_case``); UsageError (WS002) naming ``flag`` and every choice."""
        if not self.matches(value):
            raise UsageError(f"{flag} '{value}' is not one of {', '.join(self.values)}",
                             fix=f"use {flag} {self.metavar}")
        return value.lower() if self.fold_case else value  # type: ignore[union-attr]


DEVICES = Choices(("auto", "cpu", "cuda", "cuda:N"))

"""The project's error hierarchy: one base, one for bad input, one for a
strategy that breaks a rule. Everything a user can get wrong ends here, never
in a bare assert or a traceback."""

import reprlib

MESSAGE_VALUE_CHARS = 80       # a value is shown as at most this many characters
MESSAGE_PART_CHARS = 400       # source, key and expected text: at most this many each

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict = 3, 6, 6, 6
_repr.maxset = _repr.maxfrozenset = _repr.maxdeque = _repr.maxarray = 6
_repr.maxstring, _repr.maxlong, _repr.maxother = MESSAGE_VALUE_CHARS, 40, MESSAGE_VALUE_CHARS


def one_line(text, limit: int = MESSAGE_PART_CHARS) -> str:
    """`text` on one line (runs of whitespace collapsed) and at most `limit`
    characters, cut with '...'."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short_repr(value, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """repr(value), bounded in work and length: nested containers are cut
    at a few levels and items, so a YAML alias bomb or a 3,000-deep list
    costs nothing to show."""
    try:
        text = _repr.repr(value)
    except Exception:                       # a repr that fails must not hide the error
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


class OptimizerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OptimizerError):
    """Bad input: names the source (file or dict), the key, the value and what
    was expected. The message is one line of bounded length whatever the
    value is."""

    def __init__(self, source, key, value, expected):
        self.source, self.key, self.value, self.expected = source, key, value, expected
        where = f"{one_line(source)}: " if source else ""
        super().__init__(f"{where}key '{one_line(key, MESSAGE_VALUE_CHARS)}': got {short_repr(value)}, "
                         f"expected {one_line(expected)}")


class InfeasibleStrategy(OptimizerError):
    """A strategy that breaks a rule (divisibility, network tier, capacity).
    `rule` is a short machine-readable name, the message carries the numbers."""

    def __init__(self, rule, message):
        self.rule = rule
        super().__init__(f"{rule}: {message}")

"""The project's error hierarchy: one base, one for bad input, one for a
strategy that breaks a rule. Everything a user can get wrong ends here, never
in a bare assert or a traceback."""


class OptimizerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OptimizerError):
    """Bad input: names the source (file or dict), the key, the value and what
    was expected."""

    def __init__(self, source, key, value, expected):
        self.source, self.key, self.value, self.expected = source, key, value, expected
        where = f"{source}: " if source else ""
        super().__init__(f"{where}key '{key}': got {value!r}, expected {expected}")


class InfeasibleStrategy(OptimizerError):
    """A strategy that breaks a rule (divisibility, network tier, capacity).
    `rule` is a short machine-readable name, the message carries the numbers."""

    def __init__(self, rule, message):
        self.rule = rule
        super().__init__(f"{rule}: {message}")

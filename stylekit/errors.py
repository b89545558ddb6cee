"""The one exception type a user sees: a clear, one-line message that says what to do."""


class StylekitError(Exception):
    """A problem with the user's input or environment; printed as one line, never a traceback."""


class ConfigError(StylekitError, ValueError):
    """A configuration value is out of range or inconsistent."""

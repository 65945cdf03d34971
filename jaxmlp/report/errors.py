"""The report's one error: it cannot be built, and the message says what to pass or fix."""


class ReportError(ValueError):
    """The report cannot be built; the message says what to pass or fix."""

"""The error every invalid sweep file raises."""


class SweepError(ValueError):
    """An invalid sweep file; nothing has been trained or logged."""

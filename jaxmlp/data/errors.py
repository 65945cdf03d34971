"""The error every unusable dataset raises."""


class DataError(ValueError):
    """The data cannot be used (a missing file or column, text features, missing values, one
    class only, too few rows, ...); the message names the file, the column and the fix.
    Raised before anything is compiled or logged."""

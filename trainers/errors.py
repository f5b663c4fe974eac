"""The one exception type that reaches users as a one-line message."""


class ToxituneError(Exception):
    """A problem the user can fix: bad input, bad settings or missing files.

    Command-line entry points print ``error: <message>`` and exit with status 2 for these; every
    other exception is a bug and keeps its traceback.
    """


class DataError(ToxituneError):
    """The data source is missing, unreadable or unusable for training."""


class ConfigError(ToxituneError):
    """A setting is out of range or inconsistent with the others."""


class DataWarning(UserWarning):
    """Data that toxitune could use only in part (rows without a label or text were dropped).

    Command-line entry points print these as one ``warning: <message>`` line.
    """

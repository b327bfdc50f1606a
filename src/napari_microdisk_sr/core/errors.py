"""Errors the user can act on.

Every error raised on purpose by the core derives from :class:`MicrodiskSRError`; its message is one line
that says what is wrong and how to fix it. The command line prints it as ``error: <message>`` and exits
with status 2; the widgets show it as a napari notification.
"""


class MicrodiskSRError(Exception):
    """Base class of the errors that carry a user-facing, one-line message."""


class InputError(MicrodiskSRError, ValueError):
    """An image, a folder or a parameter given by the user cannot be used."""


class WeightsError(MicrodiskSRError):
    """Model weights are missing, unreadable, unsafe or of another architecture."""


class OutputError(MicrodiskSRError):
    """An output cannot be written (folder not writable, would overwrite the input, ...)."""


class TrainingError(MicrodiskSRError):
    """Training cannot start or continue (non-finite loss, incompatible resume, ...)."""


def short_list(items: "list[str]", n: int = 3) -> str:
    """The first ``n`` items joined by commas, then how many more there are, for a one-line message."""
    shown = ", ".join(items[:n])
    return shown if len(items) <= n else f"{shown} and {len(items) - n} more"

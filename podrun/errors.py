"""podrun's error hierarchy: every error a user can cause is a PodrunError.

Each carries a one-line, user-facing message naming the thing that is wrong and a
stable exit code. podrun's own failures exit 254 (rkt's convention); an app's exit
code is passed through by ``podrun run`` and never collides with these because
they are raised before or around the pod, not instead of it.
"""

from __future__ import annotations

EXIT_ERROR = 254


class PodrunError(Exception):
    """Base of all user-facing errors: ``str(err)`` is the one-line message."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # One line, always: the CLI prints exactly this.
        return " ".join(self.message.split("\n"))


class UsageError(PodrunError):
    """Bad flags or arguments on the command line."""


class ManifestError(PodrunError):
    """An image or pod manifest breaks the appc schema or a semantic rule.

    ``path`` is the JSON path of the offending field, e.g. ``app.exec[0]``.
    """

    def __init__(self, path: str, message: str, *, kind: str = "manifest") -> None:
        self.path = path
        self.detail = message
        where = f"{kind} field {path}" if path else kind
        super().__init__(f"invalid {where}: {message}")


class ImageError(PodrunError):
    """An ACI whose layout or content is unacceptable."""


class UnsafeArchiveError(ImageError):
    """A tar entry that would escape its target or is otherwise hostile."""


class NotFoundError(PodrunError):
    """A named thing (image, pod, key, volume…) does not exist."""


class AmbiguousError(PodrunError):
    """A short prefix or name matches more than one thing."""


class StoreError(PodrunError):
    """The image store cannot do what was asked."""


class SignatureError(PodrunError):
    """A missing, bad or untrusted signature."""


class TrustError(PodrunError):
    """The trust store cannot do what was asked (bad key file, unknown key…)."""


class FetchError(PodrunError):
    """Getting an image or a key from somewhere failed."""


class PodError(PodrunError):
    """A pod lifecycle operation cannot be done."""

"""Errors raised by the decision core."""

from __future__ import annotations

from typing import Literal


class ForescaleError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidInputError(ForescaleError, ValueError):
    """Input that can never be valid: negative or NaN rates, a percentile outside (0, 1)…

    The message names the problem in one line so that a CLI or a status condition can show
    it as it is.
    """


def os_reason(exc: OSError) -> str:
    """What the system said of a refused file or socket operation, for a one-line message
    ("No space left on device"), or the exception's name when it said nothing."""
    return exc.strerror or type(exc).__name__


class NotFittedError(ForescaleError, RuntimeError):
    """A forecaster was asked to predict before it was fitted."""


ArtifactReason = Literal["ArtifactMissing", "ArtifactCorrupt", "ArtifactMismatch"]
ARTIFACT_REASONS: tuple[ArtifactReason, ...] = ("ArtifactMissing", "ArtifactCorrupt",
                                                "ArtifactMismatch")


class ArtifactError(ForescaleError):
    """A model artifact is missing, corrupt or does not match the series it is used on.

    ``reason`` is a CamelCase word for status conditions and events, so that an operator
    can tell "train a model first" (``ArtifactMissing``) from "the file is damaged"
    (``ArtifactCorrupt``) and "retrain for this series" (``ArtifactMismatch``: another
    step, or a longer horizon than trained). It defaults to ``ArtifactCorrupt`` so that
    code written before reasons existed keeps working: an artifact that cannot be used as
    it is.
    """

    def __init__(self, message: str, reason: ArtifactReason = "ArtifactCorrupt") -> None:
        if reason not in ARTIFACT_REASONS:
            raise ValueError(f"unknown artifact error reason {reason!r}")
        super().__init__(message)
        self.reason: ArtifactReason = reason

    def __reduce__(self) -> tuple[type[ArtifactError], tuple[str, ArtifactReason]]:
        # Exception pickles only ``args``; keep the reason across process boundaries.
        return (type(self), (str(self), self.reason))

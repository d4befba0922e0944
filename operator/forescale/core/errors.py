"""Errors raised by the decision core."""


class ForescaleError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidInputError(ForescaleError, ValueError):
    """Input that can never be valid: negative or NaN rates, a percentile outside (0, 1)…

    The message names the problem in one line so that a CLI or a status condition can show
    it as it is.
    """


class NotFittedError(ForescaleError, RuntimeError):
    """A forecaster was asked to predict before it was fitted."""


class ArtifactError(ForescaleError):
    """A model artifact is missing, corrupt or does not match the series it is used on."""

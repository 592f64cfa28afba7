"""Errors caused by the user's input or environment; the CLI prints them as one line, without a traceback."""


class SaatError(Exception):
    """Base class of user-facing errors."""


class WeightsUnavailableError(SaatError, RuntimeError):
    """Pretrained weights could not be obtained (offline, blocked download, corrupt cache)."""


class StepsFailedError(SaatError, RuntimeError):
    """Some steps of a multi-step command (``saat demo``) did not finish; each is recorded and a rerun retries."""

"""Exception hierarchy shared by every layer.

Every error a user can cause derives from :class:`FedStyleError`; the command line prints
its message (which names what was wrong) and exits with status 2 instead of a traceback.
"""

from __future__ import annotations


class FedStyleError(Exception):
    """Base class of all user-facing errors of fedstyle-secure."""


class DataError(FedStyleError):
    """An image folder, image file or split is unusable (empty, unreadable, too small)."""


class ConfigError(FedStyleError):
    """A command-line option or configuration field has an invalid value."""


class ModelError(FedStyleError):
    """A saved model or index is missing, corrupt or incompatible."""


class PrivacyError(FedStyleError):
    """A differential-privacy parameter is invalid or a privacy budget would be exceeded."""


class SecureAggregationError(FedStyleError):
    """A secure-aggregation message or key failed a check; the operation fails closed."""


class TransportError(FedStyleError):
    """A network peer misbehaved or a remote call failed."""

"""Errors a user can cause and fix: the CLI prints them as one line, the service as a 4xx."""

from __future__ import annotations


class MtrankError(Exception):
    """Base of every error that names a problem in the user's input (file, flag, feature, key)."""


class SchemaError(MtrankError, ValueError):
    """A schema file or dict is invalid; the message names the key (and the feature)."""


class FeatureError(MtrankError, ValueError):
    """A dict of raw features does not match the schema; the message names the feature."""


class ConfigError(MtrankError, ValueError):
    """A hyperparameter or training config is invalid; the message names the key."""

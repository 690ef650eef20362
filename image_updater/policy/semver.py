"""Semantic versions and Masterminds/semver v3 constraints, as Argo CD Image Updater and Flux
use them. Pure: strings in, values and decisions out.

This module gathers both halves under their historical import path:
:mod:`image_updater.policy.version` (parsing and precedence) and
:mod:`image_updater.policy.constraint` (Masterminds constraints).
"""

from __future__ import annotations

from image_updater.policy.constraint import (
    MAX_ALTERNATIVES,
    MAX_CONSTRAINT_LEN,
    Alternative,
    Comparator,
    Constraint,
    ConstraintError,
)
from image_updater.policy.version import MAX_VERSION_LEN, InvalidVersionError, Version

__all__ = [
    "MAX_ALTERNATIVES",
    "MAX_CONSTRAINT_LEN",
    "MAX_VERSION_LEN",
    "Alternative",
    "Comparator",
    "Constraint",
    "ConstraintError",
    "InvalidVersionError",
    "Version",
]

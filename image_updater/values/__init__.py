"""Pure editing of Helm values files: key paths, reading and setting one scalar."""

from __future__ import annotations

from image_updater.values.editor import read_scalar, read_scalars, set_scalar, values_diff
from image_updater.values.keypath import KeyPath, format_key_path, parse_key_path

__all__ = [
    "KeyPath",
    "format_key_path",
    "parse_key_path",
    "read_scalar",
    "read_scalars",
    "set_scalar",
    "values_diff",
]

"""Typed readers of policy fields and the problems they report, with file:line:column.

Shared by the policy walk in :mod:`image_updater.config.policies`: each reader returns the
value or None, and records what is wrong (and a hint) on the walk's :class:`_Ctx`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from image_updater.errors import Problem
from image_updater.model import App
from image_updater.signatures import PublicKey


@dataclass
class _Ctx:
    """Where we are while walking one document: the file and the problems found so far."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    #: (app name, line) of every document that names a valid app, built or not
    names: list[tuple[str, int]] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)
    #: public key file -> the key, or what is wrong with it (read once per file)
    keys: dict[str, PublicKey | str] = field(default_factory=dict)

    def add(self, node: Any, key: Any, fld: str, message: str, hint: str = "") -> None:
        line, col = _position(node, key)
        problem = Problem(self.file, line, col, fld, message, hint)
        if problem not in self.problems:  # a default is checked once per environment using it
            self.problems.append(problem)


def _position(node: Any, key: Any = None) -> tuple[int, int]:
    """1-based line and column of ``key`` in ``node`` (or of the node itself)."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return (0, 0)
    try:
        if key is not None and isinstance(node, CommentedMap) and key in node:
            line, col = lc.key(key)
        elif key is not None and isinstance(node, CommentedSeq):
            line, col = lc.item(key)
        else:
            line, col = lc.line, lc.col
    except (KeyError, IndexError, TypeError):
        line, col = lc.line, lc.col
    if not isinstance(line, int) or not isinstance(col, int):
        return (0, 0)  # a tagged scalar (``!x``) carries no position
    return (line + 1, col + 1)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    allowed = ", ".join(choices)
    return f"did you mean '{close[0]}'? allowed keys: {allowed}" if close else f"allowed: {allowed}"


def _check_keys(ctx: _Ctx, node: CommentedMap, allowed: tuple[str, ...], where: str) -> None:
    for key in node:
        if key not in allowed:
            ctx.add(node, key, f"{where}.{key}".lstrip("."), f"unknown key '{key}'",
                    _did_you_mean(str(key), allowed))


class _Layer:
    """Environment settings falling back to the app's defaults, remembering where each came from."""

    def __init__(self, env: CommentedMap, defaults: CommentedMap, where: str):
        self.env, self.defaults, self.where = env, defaults, where

    def get(self, key: str) -> tuple[Any, CommentedMap, str]:
        if key in self.env:
            return self.env[key], self.env, f"{self.where}.{key}"
        if key in self.defaults:
            return self.defaults[key], self.defaults, f"defaults.{key}"
        return None, self.env, f"{self.where}.{key}"


def _req_str(ctx: _Ctx, node: CommentedMap, key: str, fld: str) -> str | None:
    """A required name, reference or URL: text only (``image: 42`` is a mistake)."""
    if key not in node or node[key] in (None, ""):
        ctx.add(node, None, fld, "is required", f"add '{key}:'")
        return None
    return _opt_str(ctx, node, key, fld, text_only=True)


def _opt_str(ctx: _Ctx, node: CommentedMap, key: str, fld: str, *,
             text_only: bool = False) -> str | None:
    """The value as text. Numbers are accepted as text (``tag: 42``) unless ``text_only``."""
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return str(value)
    if text_only or not isinstance(value, int | float) or isinstance(value, bool):
        ctx.add(node, key, fld, f"must be a string, not {_type_name(value)} "
                f"({' '.join(repr(value).split())[:40]})", "write text, quoted if need be")
        return None
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a mapping" if isinstance(value, dict) else \
        "a list" if isinstance(value, list) else type(value).__name__


def _layer_str(ctx: _Ctx, layer: _Layer, key: str, *, required: bool = False,
               text_only: bool = False) -> str | None:
    value, parent, fld = layer.get(key)
    if value is None:
        if required:
            ctx.add(layer.env, None, fld, "is required", f"add '{key}:' to the environment")
        return None
    return _opt_str(ctx, parent, key, fld, text_only=text_only)


def _layer_bool(ctx: _Ctx, layer: _Layer, key: str) -> bool:
    value, parent, fld = layer.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        ctx.add(parent, key, fld, "must be true or false", "")
        return False
    return value

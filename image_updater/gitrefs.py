"""The one rule for branch names, shared by the git writer and the forge adapters.

Pure: strings in, a verdict out. The rule is git's ``check-ref-format --branch``
(see git-check-ref-format(1)) plus a length limit, so a name is refused here, with a
reason, before git or a forge refuses it later with a vaguer message.
"""

from __future__ import annotations

import re

from image_updater.errors import ConfigError

#: longest branch name accepted; forges and file systems refuse longer refs in different ways
MAX_BRANCH_LENGTH = 200

# Rule 4, 5 and 10 of check-ref-format: control characters, space, ~ ^ : ? * [ and backslash.
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_problem(name: object) -> str | None:
    """Why git would refuse ``name`` as a branch name, or None when it is valid."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_BRANCH_LENGTH:
        return f"it is longer than {MAX_BRANCH_LENGTH} characters"
    bad = _FORBIDDEN_CHARACTER.search(name)
    if bad:
        return f"it contains the character {bad.group()!r}"
    for text, reason in (("..", "it contains '..'"), ("@{", "it contains '@{'"),
                         ("//", "it contains '//'")):
        if text in name:
            return reason
    return _shape_problem(name) or _component_problem(name)


def _shape_problem(name: str) -> str | None:
    if name.startswith("-"):
        return "it starts with '-', which git would read as an option"
    if name.startswith("/") or name.endswith("/"):
        return "it starts or ends with '/'"
    if name.endswith("."):
        return "it ends with '.'"
    if name in ("@", "HEAD"):
        return f"{name!r} has a special meaning to git"
    return None


def _component_problem(name: str) -> str | None:
    for component in name.split("/"):
        if component.startswith("."):
            return f"its part {component!r} starts with '.'"
        if component.endswith(".lock"):
            return f"its part {component!r} ends with '.lock'"
    return None


def check_branch(name: str, *, what: str = "branch") -> str:
    """Return ``name`` if git accepts it as a branch name; raise ConfigError otherwise."""
    problem = branch_problem(name)
    if problem is not None:
        raise ConfigError(
            f"The {what} name {repr(name)[:90]} is not a valid git branch name: {problem}. "
            "Use letters, digits and '-', '_', '.', '/' (no '..', no leading '-' or '.', "
            "no trailing '/', '.' or '.lock')."
        )
    return name

"""Stage 2 of a cycle, pure: given what a values file holds and what it should hold, the edit.

No I/O here: text in, text and a :class:`Change` out, so the same function serves the
commit path, the pull-request path, dry runs and the retry after a rejected push.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from image_updater.changes import Change, KeyChange
from image_updater.engine.resolve import Resolved
from image_updater.errors import ImageUpdaterError, ValuesError
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment, KeyPath
from image_updater.policy.strategies import compiled
from image_updater.values.document import check_size
from image_updater.values.editor import read_present, set_scalar

#: answers kept by _present. A cycle reads every tracked file in turn, and an LRU smaller
#: than that cycle misses on every read: at 10,000 apps x 3 files a limit of 16,384 made
#: every steady cycle parse all 30,000 texts again (3 ms each). About 1 KB per entry.
PARSED_TEXTS = 1 << 17


def dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


def _scalars(text: str, paths: tuple[KeyPath, ...], file: str,
             max_bytes: int = DEFAULT_FILE_BYTES) -> dict[KeyPath, str | None]:
    """Every values text the engine parses passes here: the size cap comes first."""
    check_size(text, file=file, limit=max_bytes)
    return _present(text, paths, file)


@functools.lru_cache(maxsize=PARSED_TEXTS)
def _present(text: str, paths: tuple[KeyPath, ...], file: str) -> dict[KeyPath, str | None]:
    """The present keys among ``paths`` (None: present with a null value); absent keys are
    left out. Parsing YAML in pure Python costs milliseconds per file; values files rarely
    change, so a steady-state cycle re-reads the same texts: remember the answers by content."""
    return read_present(text, paths, file=file)


def _written_paths(env: Environment) -> tuple[KeyPath, ...]:
    return tuple(p for p in (env.write.tag, env.write.digest, env.write.reference) if p)


@dataclass(frozen=True)
class Current:
    """What a values file says an environment runs."""

    tag: str | None
    digest: str | None


def desired_values(env: Environment, res: Resolved) -> list[tuple[KeyPath, str]]:
    """The (key, value) pairs the policy's ``write`` asks for."""
    out: list[tuple[KeyPath, str]] = []
    if env.write.tag is not None:
        out.append((env.write.tag, res.tag))
    if env.write.digest is not None:
        out.append((env.write.digest, res.digest))
    if env.write.reference is not None:
        out.append((env.write.reference, f"{res.tag}@{res.digest}"))
    return out


def read_current(env: Environment, text: str, *, max_bytes: int = DEFAULT_FILE_BYTES
                 ) -> Current:
    """The tag and digest a values file holds for ``env`` (None where not written).

    A text over ``max_bytes`` (settings ``limits.values_file_bytes``) raises ValuesError.
    """
    values = _scalars(text, _written_paths(env), env.file, max_bytes)
    tag = digest = None
    if env.write.tag is not None:
        tag = values.get(env.write.tag)
    if env.write.digest is not None:
        digest = values.get(env.write.digest)
    if env.write.reference is not None:
        ref = values.get(env.write.reference) or ""
        ref_tag, _, ref_digest = ref.partition("@")
        tag, digest = tag or ref_tag or None, digest or ref_digest or None
    if env.write.tag is None and env.write.reference is None and env.strategy.kind == "digest":
        tag = env.strategy.tag
    return Current(tag=tag, digest=digest)


def moving(items: Sequence[tuple[App, Environment, Resolved]], read: Callable[[str], str | None],
           *, max_bytes: int = DEFAULT_FILE_BYTES) -> list[tuple[App, Environment, str, str]]:
    """``(app, env, tag, digest)`` of each item whose values file holds another digest than
    its resolution: the digests a plan is about to verify. Unreadable files are left to
    the plan, which reports them."""
    out = []
    for app, env, res in items:
        try:
            text = read(env.file)
            current = read_current(env, text, max_bytes=max_bytes) if text is not None else None
        except ImageUpdaterError:
            continue
        if current is not None and current.digest != res.digest:
            out.append((app, env, res.tag, res.digest))
    return out


def plan_edit(app: App, env: Environment, res: Resolved, text: str, *,
              max_bytes: int = DEFAULT_FILE_BYTES) -> tuple[str, Change | None, str]:
    """Return ``(new_text, change, why)``; ``change`` is None when nothing needs writing.

    Raises ValuesError when a key is absent: we never invent structure in a values file
    the chart may not read, and never write a value we are not sure of. A key present with
    a null value (``digest: ~``, ``tag:``) is filled in.
    """
    current = _scalars(text, _written_paths(env), env.file, max_bytes)
    if (held := _held_back(env, res, text, max_bytes)) is not None:
        return text, None, held
    new_text = text
    keys: list[KeyChange] = []
    for path, value in desired_values(env, res):
        if path not in current:
            raise ValuesError(
                f"{env.file} has no key {dotted(path)} (app {app.name}, environment "
                f"{env.name}); add it to the values file (an empty value, as in 'tag:', is fine) "
                "or fix 'write' in the policy. Nothing was written.")
        old = current[path]
        if old != value:
            new_text = set_scalar(new_text, path, value, file=env.file)
            keys.append(KeyChange(key=dotted(path), old=old or None, new=value))
    if not keys:
        return text, None, f"already at {res.tag}@{res.digest[:19]}…"
    change = Change(app=app.name, env=env.name, file=env.file, image=app.image, tag=res.tag,
                    digest=res.digest, keys=tuple(keys), why=res.reason)
    return new_text, change, res.reason


def _held_back(env: Environment, res: Resolved, text: str, max_bytes: int) -> str | None:
    """The policy layer's one "never backwards" rule, given the tag git holds.

    Resolution runs before git is read, so the rule is applied here, where the values
    file is at hand; it reads tags through the policy's ``extract`` as selection does.
    """
    if env.strategy.kind != "semver":
        return None
    current = read_current(env, text, max_bytes=max_bytes)
    return compiled(env.strategy).held_back(current.tag, res.tag)

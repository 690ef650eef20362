"""``validate --values-root``: does each environment's values file hold the keys it writes?"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from image_updater.errors import ImageUpdaterError, Problem
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment


def check_values_keys(apps: Iterable[App],
                      read: Callable[[App, str], str | bytes | None], *,
                      max_file_bytes: int = DEFAULT_FILE_BYTES) -> list[Problem]:
    """Check that each environment's values file exists and holds the keys it writes.

    ``read(app, path)`` returns the file's text (or bytes, decoded here as UTF-8) or None;
    used by ``validate --values-root``.
    The keys are judged as a cycle judges them: a key with a null value is present.
    """
    problems = []
    for app in apps:
        for env in app.environments:
            text = read(app, env.file)
            if text is None:
                problems.append(Problem(app.source, env.line, 1, f"environments.{env.name}.file",
                                        f"values file {env.file} does not exist",
                                        "create it in the deploy repository or fix the path"))
                continue
            problems.extend(_missing_keys(app, env, text, max_file_bytes))
    return problems


def _missing_keys(app: App, env: Environment, data: str | bytes, max_file_bytes: int
                  ) -> list[Problem]:
    from image_updater.values.document import check_size, decode
    from image_updater.values.editor import read_present

    keys = [k for k in (env.write.tag, env.write.digest, env.write.reference) if k is not None]
    where = f"environments.{env.name}.write"
    try:
        text = decode(data, file=env.file, limit=max_file_bytes)
        check_size(text, file=env.file, limit=max_file_bytes)
        present = read_present(text, keys, file=env.file)
    except ImageUpdaterError as exc:
        return [Problem(app.source, env.line, 1, where, str(exc),
                        "fix the values file or the key path")]
    problems = []
    for key in keys:
        if key not in present:
            dotted = ".".join(map(str, key))
            problems.append(Problem(app.source, env.line, 1, where,
                                    f"key {dotted} is missing from {env.file}",
                                    f"add '{dotted}:' to the values file (an empty value is "
                                    "fine) or fix the key path"))
    return problems

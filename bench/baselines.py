"""The yardsticks the poll-cycle benchmark compares the engine with, each outside our code:

- ``ab -k -i -c N`` (Debian's ``apache2-utils``): the registry's own ceiling for HEADs on
  this machine, with keep-alive, at the engine's concurrency;
- plain git: the same values-file edits applied, committed and pushed with the git CLI;
- process CPU over a time window, for the idle daemon.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.fixtures.gitrepo import BRANCH, GIT_ENV

_TAKEN_RE = re.compile(r"Time taken for tests:\s+([0-9.]+) seconds")
_FAILED_RE = re.compile(r"Failed requests:\s+([0-9]+)")


def ab_heads(url: str, count: int, concurrency: int, accept: str) -> float:
    """Wall seconds ``ab`` takes for ``count`` keep-alive HEADs of ``url``."""
    exe = shutil.which("ab")
    if exe is None:
        raise SystemExit("ab is not installed; run ./scripts/setup.sh (apache2-utils)")
    proc = subprocess.run([exe, "-k", "-i", "-q", "-c", str(concurrency), "-n", str(count),
                           "-H", f"Accept: {accept}", url],
                          capture_output=True, text=True, check=True)
    taken, failed = _TAKEN_RE.search(proc.stdout), _FAILED_RE.search(proc.stdout)
    if taken is None or failed is None or int(failed.group(1)) or "Non-2xx" in proc.stdout:
        raise RuntimeError(f"ab did not complete {count} HEADs of {url} cleanly:\n"
                           f"{proc.stdout[-1500:]}")
    return float(taken.group(1))


def plain_git_stage(origin: Path, work: Path, edits: Mapping[str, tuple[str, str]],
                    message: str) -> float:
    """Seconds plain git takes for the git stage of a cycle: fetch, apply ``edits``
    (``{path: (old, new)}`` string replacements), commit them in one commit and push.

    The clone is made first (not timed), as the daemon keeps its clone between cycles.
    """
    _git(work.parent, "clone", "-q", "--branch", BRANCH, str(origin), work.name)
    started = time.perf_counter()
    _git(work, "fetch", "-q", "origin")
    _git(work, "reset", "-q", "--hard", f"origin/{BRANCH}")
    for path, (old, new) in edits.items():
        file = work / path
        text = file.read_text(encoding="utf-8")
        file.write_text(text.replace(old, new), encoding="utf-8")
    _git(work, "add", "--", *edits)
    _git(work, "commit", "-q", "-m", message)
    _git(work, "push", "-q", "origin", f"HEAD:{BRANCH}")
    return time.perf_counter() - started


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})


def cpu_over(seconds: float) -> float:
    """CPU seconds this process used while sleeping ``seconds`` on this thread (the other
    threads, a daemon's among them, keep running)."""
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before

"""The Dockerfile, read as text (no docker engine here), agrees with the project's own setup.

It must install with the same constraint file as scripts/setup.sh, run as a non-root user,
start image-updater, carry git and ssh, and use the Python that pyproject asks for.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage, continuation lines joined, comments dropped."""
    stages: list[list[Instruction]] = [[]]  # stage 0 holds global ARGs before the first FROM
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            keyword, _, args = logical.strip().partition(" ")
            if keyword.upper() == "FROM":
                stages.append([])
            stages[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
        logical = ""
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def _all(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def _last(stage: list[Instruction], keyword: str) -> str:
    found = _all(stage, keyword)
    assert found, f"the final stage has no {keyword} instruction"
    return found[-1]


def _run_commands(stage: list[Instruction]) -> list[list[str]]:
    """Every shell command of every RUN, split on && and ;, as argv lists."""
    commands = []
    for run in _all(stage, "RUN"):
        for part in re.split(r"&&|;", run):
            if part.strip():
                commands.append(shlex.split(part))
    return commands


def _setup_sh() -> str:
    return (ROOT / "scripts" / "setup.sh").read_text()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _resolve_args(stages: list[list[Instruction]], text: str) -> str:
    defaults = dict(a.partition("=")[::2] for a in _all(stages[0], "ARG"))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], text)


def _pip_installs(stage: list[Instruction]) -> list[list[str]]:
    return [c for c in _run_commands(stage) if "pip" in c[:3] and "install" in c]


def test_pip_install_uses_the_same_constraint_file_as_setup_sh(stages) -> None:
    builder = stages[1]
    installs = _pip_installs(builder)
    assert len(installs) == 1, installs
    argv = installs[0]
    setup_constraint = re.search(r"pip install\b.*?-c (\S+)", _setup_sh())
    assert setup_constraint is not None, "scripts/setup.sh no longer pins with -c"
    assert argv[argv.index("-c") + 1] == setup_constraint[1] == "requirements/test.lock"
    # runtime dependencies only: the project itself, no [test] extra, not editable
    assert argv[-1] == "."
    assert "-e" not in argv


def test_runs_as_the_non_root_user_65532(final) -> None:
    user = _last(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid == "65532" and gid == "65532"
    assert any("--uid 65532" in run for run in _all(final, "RUN"))


def test_entrypoint_is_the_console_script_and_cmd_is_run(final) -> None:
    assert json.loads(_last(final, "ENTRYPOINT")) == ["image-updater"]
    assert json.loads(_last(final, "CMD")) == ["run"]
    assert "image-updater" in _pyproject()["project"]["scripts"]


def test_git_and_openssh_client_installed_without_recommends(final) -> None:
    apt = [c for c in _run_commands(final) if c[:2] == ["apt-get", "install"]]
    assert len(apt) == 1
    assert "--no-install-recommends" in apt[0]
    packages = {a for a in apt[0][2:] if not a.startswith("-")}
    assert {"git", "openssh-client"} <= packages


def test_git_package_name_matches_setup_sh(final) -> None:
    """setup.sh maps commands to Debian packages as "cmd:pkg"; git must be the same package."""
    pairs = re.search(r"for pair in (.*?); do", _setup_sh(), re.S)
    assert pairs is not None, "scripts/setup.sh no longer lists its cmd:pkg pairs"
    setup_pkgs = dict(p.split(":") for p in pairs[1].replace("\\", " ").split())
    apt = next(c for c in _run_commands(final) if c[:2] == ["apt-get", "install"])
    assert setup_pkgs["git"] in apt


def test_python_minor_matches_requires_python_floor(stages) -> None:
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", _pyproject()["project"]["requires-python"])
    assert floor is not None
    bases = {_resolve_args(stages, s[0].args.split()[0]) for s in stages[1:]}
    assert bases == {f"python:{floor[1]}.{floor[2]}-slim"}  # builder and runtime agree too


def test_runtime_copies_the_builder_venv(stages, final) -> None:
    assert stages[1][0].args.endswith("AS builder")
    assert "--from=builder /opt/venv /opt/venv" in _all(final, "COPY")
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(_all(final, "ENV"))


def test_writable_paths_live_on_the_cache_volume(final) -> None:
    env = dict(kv.split("=", 1) for e in _all(final, "ENV") for kv in e.split())
    assert env["HOME"].startswith("/var/cache/image-updater")
    assert env["GIT_CONFIG_GLOBAL"].startswith("/var/cache/image-updater/")
    assert env["IMAGE_UPDATER_CACHE_DIR"].startswith("/var/cache/image-updater/")  # clones
    assert json.loads(_last(final, "VOLUME")) == ["/var/cache/image-updater"]
    assert _last(final, "EXPOSE") == "8080"


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a match on a parent counts."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p.split("/")[-1], pattern[3:]) for p in candidates)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in candidates)
        if hit:
            ignored = not negate
    return ignored


@pytest.mark.parametrize(("path", "ignored"), [
    ("pyproject.toml", False),
    ("README.md", False),  # pyproject's readme: the build fails without it
    ("image_updater/cli.py", False),
    ("requirements/test.lock", False),
    ("image_updater/__pycache__/cli.cpython-311.pyc", True),
    (".git/config", True),
    (".venv/bin/python", True),
    ("tests/conftest.py", True),
    ("deploy/examples/secrets.yaml", True),
])
def test_dockerignore_admits_only_the_build_inputs(path: str, ignored: bool) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert _dockerignored(path, patterns) is ignored


# --- requirements/test.lock: the one list of pins for setup.sh and the image ------------------


def _lock_pins() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "requirements" / "test.lock").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements/test.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution pip installs for ``requirements``, from the installed metadata."""
    todo, seen, names = [Requirement(r) for r in requirements], set(), set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        for spec in metadata.requires(req.name) or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e})
                                         for e in (req.extras or {""})):
                todo.append(dep)
    return names


def test_the_lock_pins_everything_setup_sh_installs() -> None:
    extras = re.search(r"pip install\b.*?-e '\.\[([\w,]+)\]'", _setup_sh())
    assert extras is not None, "scripts/setup.sh no longer installs the project with extras"
    project = _pyproject()["project"]
    wanted = list(project["dependencies"])
    for extra in extras[1].split(","):
        wanted += project["optional-dependencies"][extra]
    unpinned = sorted(_installed_closure(wanted) - set(_lock_pins()))
    assert unpinned == [], f"add these to requirements/test.lock (pip freeze): {unpinned}"

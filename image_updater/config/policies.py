"""Load and validate policy files into :mod:`image_updater.model` values.

(Over 450 lines: one walk of the policy schema, whose field checks read best side by side.)

Validation collects *every* problem it can find (file:line:column, field, what is wrong,
a hint) before raising one :class:`PolicyError`, so ``image-updater validate`` shows
them all at once. Nothing here touches the network or git.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from image_updater.config.fields import (
    _check_keys,
    _Ctx,
    _did_you_mean,
    _Layer,
    _layer_bool,
    _layer_str,
    _opt_str,
    _position,
    _req_str,
)
from image_updater.config.verify import refuse_unreadable_registry, verify_block
from image_updater.errors import ImageUpdaterError, PolicyError, Problem
from image_updater.model import (
    DEFAULT_FILE_BYTES,
    DEFAULT_IGNORE,
    STRATEGIES,
    App,
    Environment,
    GitTarget,
    KeyPath,
    PullRequestSpec,
    Strategy,
    TagFilter,
    WriteSpec,
    check_repo_path,
)
from image_updater.policy.strategies import StrategyError, compile_strategy
from image_updater.values.compose import load_round_trip

APP_KEYS = ("app", "image", "git", "defaults", "environments")
GIT_KEYS = ("url", "branch")
ENV_KEYS = (
    "file", "strategy", "tag", "constraint", "strict", "order", "allow", "ignore", "extract",
    "platform", "write", "approval", "pull_request", "verify",
)
WRITE_KEYS = ("tag", "digest", "reference")
PR_KEYS = ("labels", "reviewers", "assignees", "draft", "branch_prefix")
APPROVALS = ("none", "pull-request")
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")


def load_policies(paths: Iterable[str | Path], *,
                  max_file_bytes: int = DEFAULT_FILE_BYTES) -> list[App]:
    """Load every policy file under ``paths`` (files or directories); raise PolicyError.

    A file larger than ``max_file_bytes`` (settings ``limits.policy_file_bytes``) is refused
    before it is read, let alone parsed.
    """
    problems: list[Problem] = []
    apps: list[App] = []
    names: list[tuple[str, str, int]] = []
    for file in _policy_files(paths, problems):
        ctx = _load_file(file, max_file_bytes)
        apps.extend(ctx.apps)
        problems.extend(ctx.problems)
        names.extend((name, str(file), line) for name, line in ctx.names)
    problems.extend(_duplicate_names(names))
    problems.extend(_duplicates(apps))
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.file, p.line, p.column)))
    return apps


def _policy_files(paths: Iterable[str | Path], problems: list[Problem]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
            if not found:
                problems.append(Problem(str(path), 0, 0, "-", "no *.yaml policy files found",
                                        "point --policies at the directory holding policy files"))
            yield from found
        elif path.is_file():
            yield path
        else:
            problems.append(Problem(str(path), 0, 0, "-", "no such file or directory",
                                    "check the --policies path"))


def _load_file(file: Path, max_bytes: int) -> _Ctx:
    ctx = _Ctx(str(file))
    try:
        with file.open("rb") as stream:
            size = max(file.stat().st_size, 0)
            data = stream.read(max_bytes + 1) if size <= max_bytes else b""
        if size > max_bytes or len(data) > max_bytes:
            ctx.problems.append(Problem(
                str(file), 0, 0, "-", f"the file is {max(size, len(data))} bytes, more than "
                f"the {max_bytes} bytes a policy file may hold (settings limits."
                "policy_file_bytes); it was not parsed",
                "split it into several policy files or raise limits.policy_file_bytes"))
            return ctx
        text = data.decode("utf-8")
    except OSError as exc:
        ctx.problems.append(Problem(str(file), 0, 0, "-", f"cannot read the file: {exc}", ""))
        return ctx
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        ctx.problems.append(Problem(str(file), line, exc.start - data.rfind(b"\n", 0, exc.start),
                                    "-", f"the byte 0x{data[exc.start]:02x} is not UTF-8 text",
                                    "policy files must be UTF-8 text"))
        return ctx
    return _load_text(text, str(file))


def load_text(text: str, file: str) -> tuple[list[App], list[Problem]]:
    """Parse one policy file's text (one app per YAML document)."""
    ctx = _load_text(text, file)
    return ctx.apps, ctx.problems


def _load_text(text: str, file: str) -> _Ctx:
    ctx = _Ctx(file)
    try:
        # libyaml when it gives ruamel's exact result (~40x faster), else ruamel itself
        fast = load_round_trip(text)
        loaded = fast if fast is not None else YAML(typ="rt").load_all(text)
        docs = [d for d in loaded if d is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(str(exc.problem or exc).split())
        hint = "each environment and key may appear once" if "duplicate key" in what else \
            "fix the YAML syntax"
        ctx.problems.append(Problem(file, line, col, "-", f"invalid YAML: {what}", hint))
        return ctx
    except ReaderError as exc:  # NUL and other characters YAML does not allow
        line, col = _line_col(text, exc.position)
        ctx.problems.append(Problem(
            file, line, col, "-", f"invalid YAML: the non-printable character "
            f"#x{ord(exc.character) if isinstance(exc.character, str) else exc.character:04x} "
            "is not allowed in YAML", "remove it (policy files are plain UTF-8 text)"))
        return ctx
    except (YAMLError, RecursionError, ValueError) as exc:
        # deep nesting overflows the stack; ruamel's constructors raise ValueError on
        # explicitly tagged nonsense such as ``!!int x``
        ctx.problems.append(Problem(file, 0, 0, "-", f"invalid YAML: cannot be read "
                                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                                    "fix the YAML syntax"))
        return ctx
    for doc in docs:
        app = _app(ctx, doc)
        if app is not None:
            ctx.apps.append(app)
    return ctx


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` in ``text``."""
    index = min(max(index, 0), len(text))
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _app(ctx: _Ctx, doc: Any) -> App | None:
    if not isinstance(doc, CommentedMap):
        ctx.add(doc, None, "-", "a policy document must be a mapping with 'app', 'image', 'git' "
                "and 'environments'", "see policies/ for examples")
        return None
    before = len(ctx.problems)
    _check_keys(ctx, doc, APP_KEYS, "")
    name = _req_str(ctx, doc, "app", "app")
    if name is not None and not _NAME_RE.fullmatch(name):
        ctx.add(doc, "app", "app", f"app name '{name}' is not a valid name",
                "use lowercase letters, digits, '.', '_' and '-' (it becomes part of branch names)")
    elif name is not None:
        ctx.names.append((name, _position(doc, "app")[0]))
    image = _req_str(ctx, doc, "image", "image")
    if image is not None:
        _check_image(ctx, doc, image)
    git = _git(ctx, doc)
    defaults = doc.get("defaults", CommentedMap())
    if not isinstance(defaults, CommentedMap):
        ctx.add(doc, "defaults", "defaults", "must be a mapping of environment settings", "")
        defaults = CommentedMap()
    else:
        _check_keys(ctx, defaults, ENV_KEYS, "defaults")
        _check_defaults(ctx, defaults)
    envs = _environments(ctx, doc, defaults)
    refuse_unreadable_registry(ctx, doc, image, envs)
    if len(ctx.problems) > before or name is None or image is None or git is None:
        return None
    return App(name=name, image=image, git=git, environments=tuple(envs), source=ctx.file,
               line=_position(doc)[0])


def _check_defaults(ctx: _Ctx, defaults: CommentedMap) -> None:
    """Defaults are checked even when no environment uses them: a broken default is a trap
    for the next environment that will. A semver probe compiles every listing field."""
    layer = _Layer(CommentedMap(), defaults, "defaults")
    probe = Strategy(kind="semver", constraint=_layer_str(ctx, layer, "constraint") or "*",
                     order=_layer_str(ctx, layer, "order") or "asc",  # type: ignore[arg-type]
                     filter=_filter(ctx, layer))
    _compile(ctx, layer, probe)
    verify_block(ctx, layer)  # its keys are read and parsed now, used or not


#: strategy-specific keys, and the strategies that read them
_APPLIES_TO = {
    "tag": ("digest",), "constraint": ("semver",), "strict": ("semver",),
    "order": ("alphabetical", "numerical"),
    "allow": ("semver", "alphabetical", "numerical", "newest-build"),
    "ignore": ("semver", "alphabetical", "numerical", "newest-build"),
    "extract": ("semver", "alphabetical", "numerical", "newest-build"),
}


def _check_applies(ctx: _Ctx, layer: _Layer, kind: str) -> None:
    """A key set on an environment whose strategy ignores it is a mistake, not a no-op.

    Only keys on the environment itself: defaults serve environments of several strategies.
    """
    for key, kinds in _APPLIES_TO.items():
        if key in layer.env and kind not in kinds:
            ctx.add(layer.env, key, f"{layer.where}.{key}",
                    f"'{key}' has no effect with strategy {kind}",
                    f"it applies to strategy {' or '.join(kinds)}; remove it or change the "
                    "strategy")


def _check_image(ctx: _Ctx, doc: CommentedMap, image: str) -> None:
    from image_updater.registry.reference import parse_reference

    try:
        ref = parse_reference(image)
    except ImageUpdaterError as exc:
        ctx.add(doc, "image", "image", str(exc), "write host/path/name without tag or digest")
        return
    if ref.tag or ref.digest:
        ctx.add(doc, "image", "image", f"'{image}' carries a tag or digest",
                "name the repository only; the environments say which tag to follow")


def _git(ctx: _Ctx, doc: CommentedMap) -> GitTarget | None:
    node = doc.get("git")
    if not isinstance(node, CommentedMap):
        ctx.add(doc, "git" if "git" in doc else None, "git",
                "missing or not a mapping", "add git: {url: <deploy repository>, branch: master}")
        return None
    _check_keys(ctx, node, GIT_KEYS, "git")
    url = _req_str(ctx, node, "url", "git.url")
    branch = _opt_str(ctx, node, "branch", "git.branch", text_only=True) or "master"
    return GitTarget(url=url, branch=branch) if url else None


def _environments(ctx: _Ctx, doc: CommentedMap, defaults: CommentedMap) -> list[Environment]:
    node = doc.get("environments")
    if not isinstance(node, CommentedMap) or not node:
        ctx.add(doc, "environments" if "environments" in doc else None, "environments",
                "missing or empty", "add environments: {dev: {file: path/values-dev.yaml}}")
        return []
    envs = []
    for env_name, env_node in node.items():
        where = f"environments.{env_name}"
        if not isinstance(env_node, CommentedMap):
            ctx.add(node, env_name, where, "must be a mapping", "e.g. {file: values-dev.yaml}")
            continue
        if not _NAME_RE.fullmatch(str(env_name)):
            ctx.add(node, env_name, where, f"environment name '{env_name}' is not a valid name",
                    "use lowercase letters, digits, '.', '_' and '-'")
        _check_keys(ctx, env_node, ENV_KEYS, where)
        env = _environment(ctx, str(env_name), env_node, defaults, where)
        if env is not None:
            envs.append(env)
    return envs


def _environment(ctx: _Ctx, name: str, node: CommentedMap, defaults: CommentedMap,
                 where: str) -> Environment | None:
    layer = _Layer(node, defaults, where)
    before = len(ctx.problems)
    file = _layer_str(ctx, layer, "file", required=True, text_only=True)
    if file is not None:
        try:
            check_repo_path(file)  # the rule git applies before reading or writing it
        except ImageUpdaterError as exc:
            _, parent, fld = layer.get("file")
            ctx.add(parent, "file", fld, str(exc), "e.g. file: application-x/values-dev.yaml")
    strategy = _strategy(ctx, layer, name)
    write = _write(ctx, layer, strategy)
    approval = _layer_str(ctx, layer, "approval") or "none"
    if approval not in APPROVALS:
        _, parent, fld = layer.get("approval")
        ctx.add(parent, "approval", fld, f"unknown approval '{approval}'",
                _did_you_mean(approval, APPROVALS).replace("allowed keys", "allowed"))
    pr = _pull_request(ctx, layer)
    verify = verify_block(ctx, layer)
    if len(ctx.problems) > before or file is None or strategy is None or write is None:
        return None
    return Environment(name=name, file=file, strategy=strategy, write=write,
                       approval=approval,  # type: ignore[arg-type]
                       pull_request=pr, line=_position(node)[0], verify=verify)


def _strategy(ctx: _Ctx, layer: _Layer, env_name: str) -> Strategy | None:
    kind = _layer_str(ctx, layer, "strategy") or "digest"
    if kind not in STRATEGIES:
        _, parent, fld = layer.get("strategy")
        close = difflib.get_close_matches(kind, STRATEGIES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        ctx.add(parent, "strategy", fld, f"unknown strategy '{kind}'",
                f"{hint}allowed: {', '.join(STRATEGIES)}")
        return None
    _check_applies(ctx, layer, kind)
    tag = _layer_str(ctx, layer, "tag")
    if kind == "digest":
        tag = tag or env_name  # dev follows :dev unless told otherwise
    constraint = _layer_str(ctx, layer, "constraint")
    if kind == "semver":
        constraint = constraint or "*"
    platform = _layer_str(ctx, layer, "platform")
    if platform is not None and not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", platform):
        _, parent, fld = layer.get("platform")
        ctx.add(parent, "platform", fld, f"'{platform}' is not an os/arch[/variant] platform",
                "e.g. linux/amd64 or linux/arm64/v8")
    strategy = Strategy(kind=kind,  # type: ignore[arg-type]
                        tag=tag, constraint=constraint, strict=_layer_bool(ctx, layer, "strict"),
                        order=_layer_str(ctx, layer, "order") or "asc",  # type: ignore[arg-type]
                        filter=_filter(ctx, layer), platform=platform)
    _compile(ctx, layer, strategy)
    return strategy


#: what to do about a field the strategy compiler refuses, beyond what its message says
_COMPILE_HINTS = {
    "tag": "name an existing mutable tag such as dev",
    "extract": "mark the part to sort on with (?P<value>...)",
    "ignore": "e.g. ignore: ['*-debug', '/^pr-\\d+$/']",
}


def _compile(ctx: _Ctx, layer: _Layer, strategy: Strategy) -> None:
    """Validate by compiling, with the compiler the runtime uses: what passes here runs."""
    try:
        compile_strategy(strategy)
    except StrategyError as exc:
        for key, message in exc.problems:
            _, parent, fld = layer.get(key)
            ctx.add(parent, key, fld, message, _COMPILE_HINTS.get(key, ""))


def _filter(ctx: _Ctx, layer: _Layer) -> TagFilter:
    allow = _layer_str(ctx, layer, "allow")
    extract = _layer_str(ctx, layer, "extract")
    ignore_raw, parent, fld = layer.get("ignore")
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    if ignore_raw is not None:
        if isinstance(ignore_raw, str):
            ignore_raw = [ignore_raw]
        if not isinstance(ignore_raw, list) or not all(isinstance(i, str) for i in ignore_raw):
            ctx.add(parent, "ignore", fld, "must be a list of globs or /regexes/",
                    _COMPILE_HINTS["ignore"])
        else:
            ignore = DEFAULT_IGNORE + tuple(i for i in ignore_raw if i not in DEFAULT_IGNORE)
    return TagFilter(allow=allow, ignore=ignore, extract=extract)


def _write(ctx: _Ctx, layer: _Layer, strategy: Strategy | None) -> WriteSpec | None:
    from image_updater.values.editor import parse_key_path

    raw, parent, fld = layer.get("write")
    if raw is None:
        if strategy is not None and strategy.kind != "digest":
            return WriteSpec(tag=("image", "tag"), digest=("image", "digest"))
        return WriteSpec(digest=("image", "digest"))
    if not isinstance(raw, CommentedMap) or not raw:
        ctx.add(parent, "write", fld, "must map tag/digest/reference to value keys",
                "e.g. write: {digest: image.digest}")
        return None
    _check_keys(ctx, raw, WRITE_KEYS, fld)
    paths: dict[str, KeyPath] = {}
    for key in WRITE_KEYS:
        if key in raw:
            try:
                paths[key] = parse_key_path(str(raw[key]))
            except ImageUpdaterError as exc:
                ctx.add(raw, key, f"{fld}.{key}", str(exc), "e.g. image.digest")
    if not paths:
        return None
    if strategy is not None and strategy.kind == "digest" and "tag" in paths:
        ctx.add(raw, "tag", f"{fld}.tag", "the digest strategy follows one tag, so writing the "
                "tag would always write the same value", "write 'digest' (or 'reference')")
    return WriteSpec(**paths)


def _pull_request(ctx: _Ctx, layer: _Layer) -> PullRequestSpec:
    raw, parent, fld = layer.get("pull_request")
    if raw is None:
        return PullRequestSpec()
    if not isinstance(raw, CommentedMap):
        ctx.add(parent, "pull_request", fld, "must be a mapping", f"keys: {', '.join(PR_KEYS)}")
        return PullRequestSpec()
    _check_keys(ctx, raw, PR_KEYS, fld)
    spec = PullRequestSpec()
    for key in ("labels", "reviewers", "assignees"):
        if key in raw:
            items = raw[key]
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                ctx.add(raw, key, f"{fld}.{key}", "must be a list of strings", "")
            else:
                spec = replace(spec, **{key: tuple(items)})  # type: ignore[arg-type]
    if "draft" in raw:
        if not isinstance(raw["draft"], bool):
            ctx.add(raw, "draft", f"{fld}.draft", "must be true or false", "")
        else:
            spec = replace(spec, draft=raw["draft"])
    if "branch_prefix" in raw:
        spec = replace(spec, branch_prefix=str(raw["branch_prefix"]))
    return spec


def _duplicate_names(names: list[tuple[str, str, int]]) -> list[Problem]:
    """Every app name used twice, whether or not either document has other problems."""
    seen: dict[str, tuple[str, int]] = {}
    problems = []
    for name, file, line in names:
        if name in seen:
            problems.append(Problem(file, line, 1, "app",
                                    f"app '{name}' is also defined at "
                                    f"{seen[name][0]}:{seen[name][1]}",
                                    "app names must be unique across all policy files"))
        else:
            seen[name] = (file, line)
    return problems


def _duplicates(apps: list[App]) -> list[Problem]:
    problems = []
    # Two environments writing the same key of the same file would fight each other.
    targets: dict[tuple[str, str, str, KeyPath], str] = {}
    for app in apps:
        for env in app.environments:
            for key in (env.write.tag, env.write.digest, env.write.reference):
                if key is None:
                    continue
                target = (app.git.url, app.git.branch, env.file, key)
                owner = f"{app.name}/{env.name}"
                if target in targets and targets[target] != owner:
                    problems.append(Problem(app.source, env.line, 1,
                                            f"environments.{env.name}.write",
                                            f"{env.file} key {'.'.join(map(str, key))} is also "
                                            f"written by {targets[target]}",
                                            "give each environment its own values file or key"))
                targets.setdefault(target, owner)
    return problems

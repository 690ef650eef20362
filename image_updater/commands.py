"""What each CLI command does, in terms of library calls. No argument parsing here.

Over 450 lines: one short glue function per command (ten of them), each a few library calls,
and the notification that promote, hold, release and rollback each send.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from image_updater.changes import CycleResult
from image_updater.config.settings import LimitSettings, Settings, load_settings, secret_sources
from image_updater.errors import ConfigError, ImageUpdaterError, PolicyError
from image_updater.exit_codes import ExitCode, exit_code_for, once_exit_code
from image_updater.model import App, Environment, find_env, known_envs
from image_updater.observability.logs import configure_logging, scrub
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

if TYPE_CHECKING:
    from image_updater.engine.holds import Outcome
    from image_updater.engine.promote import RetagResult
    from image_updater.notify.events import CommandEvent, EventKind
    from image_updater.observability.metrics import Metrics
    from image_updater.signatures import PublicKey
    from image_updater.wiring.runtime import Runtime


def dispatch(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    """Run the command ``args`` names. ``secrets`` is the process's one secret registry: the
    log handler and the credential sources share it, and the CLI masks what it prints with it.
    """
    handler: Callable[[argparse.Namespace, SecretRegistry], ExitCode] = {
        "once": cmd_once, "validate": cmd_validate, "check": cmd_check, "run": cmd_run,
        "retag": cmd_retag, "promote": cmd_promote, "status": cmd_status,
        "history": cmd_history, "hold": cmd_hold, "release": cmd_release,
        "rollback": cmd_rollback,
    }[args.command]
    return handler(args, secrets)


def _settings(args: argparse.Namespace) -> Settings:
    """The settings file (``--config``) with the command line's overrides applied."""
    settings = load_settings(args.config)
    from dataclasses import replace

    if getattr(args, "log_format", None):
        settings = replace(settings, log_format=args.log_format)
    if getattr(args, "log_level", None):
        settings = replace(settings, log_level=args.log_level)
    if getattr(args, "interval", None):
        settings = replace(settings, interval=args.interval)
    return settings


def _start_logging(settings: Settings, secrets: SecretRegistry) -> None:
    """Log as the settings say, masking every secret they point at."""
    configure_logging(fmt=settings.log_format, level=settings.log_level,
                      secrets=known_secrets(settings, secrets))


def known_secrets(settings: Settings, secrets: SecretRegistry) -> SecretRegistry:
    """Add every secret value the settings point at to ``secrets`` (and return it), so no
    log line can show one even before the component that uses it has read it.

    Sources read again later (rotation) add themselves; pattern-based masking (headers, URL
    userinfo, tokens) catches the rest.
    """
    from image_updater.registry.credentials import docker_config_secrets

    envs, files = secret_sources(settings)
    for setting, name in envs:
        try:
            read_secret_env(name, setting=setting, secrets=secrets)
        except ConfigError:
            continue  # reported by the component that needs it, when it needs it
    for setting, path in files:
        try:
            text = read_secret_file(path, setting=setting, secrets=secrets)
        except ConfigError:
            continue
        for line in text.splitlines():  # a multi-line key may be quoted one line at a time
            secrets.add(line)
        for value in docker_config_secrets(text):
            secrets.add(value)
    return secrets


def _policy_paths(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "policies", None) or
                [os.environ.get("IMAGE_UPDATER_POLICIES", "policies")])


def cmd_once(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.config.policies import load_policies

    settings = _settings(args)
    _start_logging(settings, secrets)
    apps = load_policies(_policy_paths(args),
                         max_file_bytes=settings.limits.policy_file_bytes)
    known = known_envs(apps)  # before --app narrows them: holds of other apps are valid
    if args.app:
        apps = _only(apps, args.app)
    dry_run = args.dry_run or settings.dry_run
    result = asyncio.run(run_once(settings, apps, dry_run=dry_run, secrets=secrets,
                                  known=known))
    print_result(result, dry_run=dry_run, secrets=secrets)
    # waiting environments are the normal state of a new app, and a held one is a person's
    # decision: neither is a failure, both count as handled
    handled = len(result.changes) + len(result.unchanged) + len(result.waiting) + len(result.held)
    return once_exit_code(result.failures, handled)


def _only(apps: Sequence[App], names: Sequence[str]) -> list[App]:
    unknown = sorted(set(names) - {a.name for a in apps})
    if unknown:
        from image_updater.errors import ConfigError

        raise ConfigError(f"no policy defines app(s) {', '.join(unknown)}; known apps: "
                          f"{', '.join(sorted(a.name for a in apps))}.")
    return [a for a in apps if a.name in names]


async def run_once(settings: Settings, apps: Sequence[App], *, dry_run: bool = False,
                   secrets: SecretRegistry | None = None,
                   known: frozenset[tuple[str, str]] | None = None) -> CycleResult:
    """One reconcile cycle with adapters built from ``settings``.

    Nothing is written when ``dry_run`` or ``settings.dry_run`` is set. Credentials read are
    added to ``secrets`` (the log handler's registry); None gives the cycle a registry of
    its own, for embedders that mask nothing themselves.
    """
    from image_updater.engine.reconcile import reconcile
    from image_updater.observability.report import report
    from image_updater.wiring.runtime import Runtime

    runtime = Runtime(settings, secrets=secrets if secrets is not None else SecretRegistry())
    try:
        deps = dataclasses.replace(runtime.deps(), known_envs=known)
        result = await reconcile(apps, deps, dry_run=dry_run or settings.dry_run)
    finally:
        await runtime.aclose()
    # print_result shows each failure; the log would show it a second time
    report(result, runtime.metrics, log_outcomes=False)
    return result


def print_result(result: CycleResult, *, dry_run: bool, secrets: SecretRegistry,
                 out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for preview in result.previews:
        print(preview, file=out)
    for c in result.changes:
        verb = ("would propose" if dry_run else "proposed") if c.via == "pull-request" else \
            ("would update" if dry_run else "updated")
        keys = ", ".join(f"{k.key}: {k.old or '(unset)'} → {k.new}" for k in c.keys)
        print(f"{verb} {c.app}/{c.env} in {c.file}: {keys}", file=out)
    for sha in result.commits:
        print(f"pushed commit {sha}", file=out)
    for url in result.pull_requests.values():
        print(f"pull request: {url}", file=out)
    for action in result.pull_request_actions:
        if action.action in ("closed", "declined"):
            what = "closed obsolete" if action.action == "closed" else "declined (not proposed "\
                "again)"
            print(scrub(f"{what} pull request {action.url}: {action.why}", secrets), file=out)
    for w in result.waiting:
        print(f"waiting {w.app}/{w.env}: tag {w.tag} does not exist yet (nothing promoted "
              "there so far)", file=out)
    for h in result.held:
        what = "rolled back" if h.kind == "rollback" else "held"
        print(scrub(f"{what} {h.app}/{h.env} by {h.by} since {h.since} ({h.reason}): nothing "
                    f"written; image-updater release {h.app} {h.env} ends it", secrets), file=out)
    for f in result.failures:
        print(scrub(f"FAILED {f.app}/{f.env}: {f.message}", secrets), file=out)
    if not result.changes and not result.failures:
        count = len(result.unchanged)
        print(f"no changes ({count} environment{'s' if count != 1 else ''} up to date)",
              file=out)


def cmd_validate(args: argparse.Namespace, _secrets: SecretRegistry) -> ExitCode:
    from image_updater.config.policies import load_policies

    paths = [*args.paths, *(args.policies or ())] or _policy_paths(args)
    settings_problem = None
    limits = LimitSettings()
    if args.config:  # the settings file too, so one command checks a whole ConfigMap
        try:
            settings = load_settings(args.config)  # renders its templates against a sample
            limits = settings.limits
            from image_updater.notify.factory import check_sinks
            from image_updater.wiring.runtime import check_github_app, commit_signer

            commit_signer(settings, _secrets)  # a key that cannot sign is a settings problem
            check_github_app(settings, _secrets)
            check_sinks(settings.notifications, secrets=_secrets)
            from image_updater.identity import check_identities

            check_identities(settings.api, secrets=_secrets)  # token and JWKS files
            _show_templates(settings)
        except ConfigError as exc:
            settings_problem = str(exc)
            print(settings_problem)
    try:
        apps = load_policies(paths, max_file_bytes=limits.policy_file_bytes)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found.", file=sys.stderr)
        return ExitCode.CONFIG
    if settings_problem is not None:
        return ExitCode.CONFIG
    if args.values_root:
        from image_updater.config.values_check import check_values_keys

        root = Path(args.values_root)

        def read(_app: App, path: str) -> bytes | None:
            file = root / path
            return file.read_bytes() if file.is_file() else None

        problems = check_values_keys(apps, read, max_file_bytes=limits.values_file_bytes)
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} problem(s) found.", file=sys.stderr)
            return ExitCode.CONFIG
    envs = sum(len(a.environments) for a in apps)
    print(f"ok: {len(apps)} app(s), {envs} environment(s) in {', '.join(map(str, paths))}")
    return ExitCode.OK


def _show_templates(settings: Settings) -> None:
    """Print what the settings' templates make of a sample change, so their author sees it."""
    from image_updater.config.settings import message_templates
    from image_updater.config.templates import render_samples

    for what, text in render_samples(message_templates(settings)).items():
        print(f"templates: the {what} for a sample change:")
        print("".join(f"  | {line}\n" for line in text.rstrip("\n").split("\n")), end="")


def cmd_check(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.engine.check import CheckReport, check_image, check_strategy
    from image_updater.wiring.registries import RegistryPool

    settings = _settings(args)
    _start_logging(settings, secrets)
    strategy = check_strategy(kind=args.strategy, tag=args.tag, constraint=args.constraint,
                              strict=args.strict, order=args.order, platform=args.platform,
                              allow=args.allow, ignore=args.ignore, extract=args.extract)

    keys = _public_keys(args.key or [])

    async def run() -> CheckReport:
        pool = RegistryPool(settings, secrets=secrets)
        try:
            return await check_image(pool, args.image, strategy, keys=keys,
                                     identity=args.identity)
        finally:
            await pool.aclose()

    report = asyncio.run(run())
    print(report.text)
    return ExitCode.OK if report.found else ExitCode.NOT_FOUND


def _public_keys(paths: Sequence[str]) -> tuple[PublicKey, ...]:
    """``check --key``: each file read and parsed as the policy loader does."""
    from image_updater.config.verify import read_public_key

    return tuple(read_public_key(Path(path), name=path) for path in paths)


def cmd_run(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.daemon.main import run_daemon

    settings = _settings(args)
    _start_logging(settings, secrets)
    if settings.dry_run:
        logging.getLogger("image_updater.commands").warning(
            "dry_run is set in the settings file: every cycle plans and logs its changes, "
            "nothing is committed, pushed or proposed; remove dry_run to apply them.")
    # 0 clean stop, 1 failed
    return ExitCode(run_daemon(settings, _policy_paths(args), secrets=secrets))


def cmd_retag(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    settings = _settings(args)
    _start_logging(settings, secrets)
    return retag_command(settings, args.src, args.dst, digest=args.digest,
                         expect_current=args.expect_current, secrets=secrets,
                         policy_paths=args.policies)


def cmd_promote(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    if args.server or os.environ.get("IMAGE_UPDATER_SERVER"):
        return cmd_promote_remote(args, secrets)
    settings = _settings(args)
    _start_logging(settings, secrets)
    app = args.app or os.environ.get("IMAGE_UPDATER_APP")
    source = args.source or os.environ.get("IMAGE_UPDATER_FROM")
    target = args.target or os.environ.get("IMAGE_UPDATER_TO")
    if not (app and source and target):
        print("error: promote needs APP, --from and --to (or IMAGE_UPDATER_APP, "
              "IMAGE_UPDATER_FROM, IMAGE_UPDATER_TO)", file=sys.stderr)
        return ExitCode.USAGE
    digest = args.digest or os.environ.get("IMAGE_UPDATER_DIGEST")
    if not digest and not args.from_git:
        print(f"error: promote needs the digest that was tested: --digest sha256:… (or "
              f"IMAGE_UPDATER_DIGEST), as the PostSync job passes {{{{ .Values.image.digest }}}}."
              f" Without it, the head of the deploy branch may already hold a newer image "
              f"that nobody tested in {source}. To promote whatever git says {source} runs "
              f"now (a person promoting by hand), pass --from-git.", file=sys.stderr)
        return ExitCode.USAGE
    return promote_command(settings, _policy_paths(args), app, source, target, digest=digest,
                           secrets=secrets, force=args.force)


def cmd_promote_remote(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    """``promote --server URL``: the daemon promotes; same output and exit codes."""
    from image_updater.api_client import Promotion, promote_remote, service_account_token_path

    server = args.server or os.environ["IMAGE_UPDATER_SERVER"]
    app = args.app or os.environ.get("IMAGE_UPDATER_APP")
    source = args.source or os.environ.get("IMAGE_UPDATER_FROM")
    target = args.target or os.environ.get("IMAGE_UPDATER_TO")
    digest = args.digest or os.environ.get("IMAGE_UPDATER_DIGEST")
    if not (app and source and target and digest):
        print("error: promote --server needs APP, --from, --to and --digest (or "
              "IMAGE_UPDATER_APP, IMAGE_UPDATER_FROM, IMAGE_UPDATER_TO, IMAGE_UPDATER_DIGEST)",
              file=sys.stderr)
        return ExitCode.USAGE
    problem = _remote_usage_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    evidence = dict(item.partition("=")[::2] for item in args.evidence)
    token_file = args.token_file or service_account_token_path(args.service_account_token)
    answer = promote_remote(Promotion(server=server, app=app, source=source, target=target,
                                      digest=digest, evidence=evidence),
                            token_file=token_file, secrets=secrets)
    if answer.code is ExitCode.OK:
        print(answer.message)
    else:
        print(scrub(f"error: {answer.message}", secrets), file=sys.stderr)
    return answer.code


def _remote_usage_problem(args: argparse.Namespace) -> str | None:
    if args.from_git or args.force:
        return ("promote --server takes neither --from-git nor --force: the daemon promotes "
                "only a tested digest, and lifting a hold is a person's decision")
    if args.token_file is None and args.service_account_token is None:
        return "promote --server needs --token-file FILE or --service-account-token [PATH]"
    if any("=" not in item for item in args.evidence):
        return "--evidence takes KEY=VALUE, e.g. --evidence job=$JOB_NAME"
    return None


def retag_command(settings: Settings, src: str, dst: str, *, secrets: SecretRegistry,
                  digest: str | None = None, expect_current: str | None = None,
                  policy_paths: Sequence[str] | None = None) -> ExitCode:
    """``image-updater retag``: one line of output, and the exit code.

    Built on registry clients alone (not the daemon's Runtime), so a PostSync job imports
    neither git nor boto3 unless an ECR host is involved. With ``policy_paths`` (``--policies``),
    a destination tag that a gated environment follows gets only a digest its keys signed.
    """
    from image_updater.engine.promote import retag
    from image_updater.engine.verify import retag_gate
    from image_updater.wiring.registries import RegistryPool

    apps = _retag_policies(settings, policy_paths)

    async def run() -> RetagResult:
        pool = RegistryPool(settings, secrets=secrets)
        try:
            return await retag(src, dst, digest=digest, expect_current=expect_current,
                               registry_for=pool, count_requests=pool.requests,
                               gate=retag_gate(apps, dst, pool))
        finally:
            await pool.aclose()

    return _report(run, secrets)


def _retag_policies(settings: Settings, paths: Sequence[str] | None) -> list[App]:
    """The policies ``retag`` checks its destination against: ``--policies``, else
    $IMAGE_UPDATER_POLICIES; neither: nothing is gated (retag knows no environments)."""
    from image_updater.config.policies import load_policies

    if not paths and os.environ.get("IMAGE_UPDATER_POLICIES"):
        paths = [os.environ["IMAGE_UPDATER_POLICIES"]]
    if not paths:
        return []
    return load_policies(paths, max_file_bytes=settings.limits.policy_file_bytes)


def promote_command(settings: Settings, policy_paths: Sequence[str], app: str, source: str,
                    target: str, *, secrets: SecretRegistry, digest: str | None = None,
                    force: bool = False) -> ExitCode:
    """``image-updater promote``: retag what ``source`` runs (per git) to ``target``'s tag."""
    from image_updater.config.policies import load_policies
    from image_updater.engine.promote import promote
    from image_updater.wiring.registries import RegistryPool
    from image_updater.wiring.runtime import Runtime

    limits = settings.limits
    chosen = _only(load_policies(policy_paths, max_file_bytes=limits.policy_file_bytes),
                   [app])[0]
    src_env = find_env(chosen, source, then="fix --from.")
    dst_env = find_env(chosen, target, then="fix --to.")

    async def run() -> RetagResult:
        runtime = Runtime(settings, secrets=secrets)
        pool = RegistryPool(settings, secrets=secrets, metrics=runtime.metrics)

        def read_head(path: str) -> str | None:
            repo = runtime.repo_for(chosen.git)
            with repo.locked("promote's read"):
                repo.sync()  # the head of the deploy branch now: what Argo CD applies
                return repo.read(path)

        try:
            try:
                result = await promote(chosen, src_env, dst_env, digest=digest,
                                       registry_for=pool, read_file=read_head,
                                       count_requests=pool.requests,
                                       values_file_bytes=limits.values_file_bytes, force=force)
            except ImageUpdaterError as exc:
                await tell(settings, secrets, runtime.metrics,
                           _promotion_refused(app, source, target, exc, secrets))
                raise
            if force and any(n.startswith("FORCED") for n in result.notes):
                result = await _audit_forced(runtime, chosen, dst_env, result)
            if result.status == "promoted":
                await tell(settings, secrets, runtime.metrics,
                           _promotion_done(app, source, target, result, secrets))
            return result
        finally:
            await pool.aclose()
            await runtime.aclose()

    return _report(run, secrets)


def _promotion_done(app: str, source: str, target: str, result: RetagResult,
                    secrets: SecretRegistry) -> CommandEvent:
    from image_updater.notify.events import CommandEvent

    return CommandEvent("promotion.done", app, target,
                        scrub(f"{app} promoted from {source} to {target}: {result.line()}",
                              secrets),
                        {"digest": result.digest, "previous": result.previous or "",
                         "tag": result.destination})


def _promotion_refused(app: str, source: str, target: str, exc: ImageUpdaterError,
                       secrets: SecretRegistry) -> CommandEvent:
    from image_updater.notify.events import CommandEvent

    return CommandEvent("promotion.refused", app, target,
                        scrub(f"Promoting {app} from {source} to {target} was refused: {exc}",
                              secrets), {"reason": exc.reason})


async def tell(settings: Settings, secrets: SecretRegistry, metrics: Metrics,
               told: CommandEvent) -> None:
    """Hand a command's outcome to the notification sinks, waiting at most
    ``notifications.flush_timeout`` s: the command's own result never depends on it."""
    from image_updater.notify.events import told as as_event
    from image_updater.notify.factory import deliver_now

    await deliver_now(settings.notifications, [as_event(told, now=_now())], secrets=secrets,
                      metrics=metrics)


async def _audit_forced(runtime: Runtime, app: App, env: Environment, result: RetagResult
                        ) -> RetagResult:
    """``promote --force`` past a hold: a warning, and a commit noting it on the hold."""
    from dataclasses import replace

    from image_updater.engine.holds import record_forced

    who = actor(None)
    what = f"promoted {result.digest} to {result.destination} (was {result.previous or 'none'})"
    log = logging.getLogger("image_updater.commands")
    log.warning("promote --force by %s past the hold on %s/%s: %s", who, app.name, env.name,
                what)
    try:
        sha = await asyncio.to_thread(
            record_forced, runtime.repo_for(app.git), app, env, by=who, what=what, now=_now(),
            max_attempts=runtime.settings.git.max_push_attempts)
    except ImageUpdaterError as exc:  # the tag moved already: say the audit commit is missing
        log.error("the forced promotion could not be recorded on the hold: %s", exc)
        return replace(result, notes=(*result.notes, f"audit commit FAILED: {exc}"))
    return replace(result, notes=(*result.notes, f"recorded on the hold in commit {sha}"))


def _report(run: Callable[[], Coroutine[Any, Any, RetagResult]], secrets: SecretRegistry
            ) -> ExitCode:
    try:
        result = asyncio.run(run())
    except ImageUpdaterError as exc:
        print(scrub(f"error: {exc}", secrets), file=sys.stderr)
        return exit_code_for(exc)
    print(result.line())
    return ExitCode.OK


def cmd_status(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.config.policies import load_policies
    from image_updater.engine.status import StatusDeps, gather, status_table
    from image_updater.wiring.runtime import Runtime

    settings = _settings(args)
    _start_logging(settings, secrets)
    apps = load_policies(_policy_paths(args), max_file_bytes=settings.limits.policy_file_bytes)
    apps = _only(apps, [args.app]) if args.app else list(apps)
    if args.env:  # the apps that have it; the error names the first app when none has
        having = [a for a in apps if args.env in {e.name for e in a.environments}]
        apps = [_only_env(a, args.env) for a in having or apps[:1]]

    async def run() -> list[Any]:
        runtime = Runtime(settings, secrets=secrets)
        try:
            return await gather(apps, StatusDeps(
                registry_for=runtime.registry_for, repo_for=runtime.repo_for,
                approvals_for=runtime.approvals_for,
                values_file_bytes=settings.limits.values_file_bytes))
        finally:
            await runtime.aclose()

    rows = asyncio.run(run())
    _print_rows(args.format, rows, status_table, secrets)
    return ExitCode.OK


def cmd_history(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.config.policies import load_policies
    from image_updater.engine.status import history_of, history_table
    from image_updater.wiring.runtime import Runtime

    settings = _settings(args)
    _start_logging(settings, secrets)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive number of changes, not {args.limit}.")
    apps = load_policies(_policy_paths(args), max_file_bytes=settings.limits.policy_file_bytes)
    (app,) = _only(apps, [args.app])
    if args.env:
        find_env(app, args.env, then="fix --env or the ENV argument.")
    entries = history_of(app, args.env, Runtime(settings, secrets=secrets).repo_for(app.git),
                         limit=args.limit)
    _print_rows(args.format, entries, history_table, secrets)
    return ExitCode.OK




def _print_rows(fmt: str, rows: Sequence[Any], table: Callable[[Any], str],
                secrets: SecretRegistry) -> None:
    """JSON (one stable document, see README) or a table; masked like every output."""
    if fmt == "json":
        import json

        print(scrub(json.dumps([r.as_json() for r in rows], indent=2), secrets))
    else:
        print(scrub(table(rows), secrets))


# -- a person's commands on one environment: hold, release, rollback ---------------------------


def actor(explicit: str | None) -> str:
    """Who runs a command: ``--by``, else $IMAGE_UPDATER_ACTOR, else git's configured
    author (user.email, else user.name), else the OS user."""
    import getpass
    import shutil
    import subprocess

    if explicit and explicit.strip():
        return explicit.strip()
    if env := os.environ.get("IMAGE_UPDATER_ACTOR", "").strip():
        return env
    git = shutil.which("git")
    for key in ("user.email", "user.name"):
        if git is None:
            break
        found = subprocess.run([git, "config", "--get", key], capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
        if found:
            return found
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def _one_env(args: argparse.Namespace, settings: Settings) -> tuple[App, Environment]:
    from image_updater.config.policies import load_policies

    apps = load_policies(_policy_paths(args),
                         max_file_bytes=settings.limits.policy_file_bytes)
    app = _only(apps, [args.app])[0]
    return app, find_env(app, args.env, then="nothing was written.")


def cmd_hold(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.engine.holds import place_hold

    async def run(rt: Runtime, app: App, env: Environment) -> Outcome:
        return await asyncio.to_thread(
            place_hold, rt.repo_for(app.git), app, env, by=actor(args.by),
            reason=args.reason, now=_now(), max_attempts=rt.settings.git.max_push_attempts)

    return _control(args, secrets, run)


def cmd_release(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.engine.holds import release_hold

    async def run(rt: Runtime, app: App, env: Environment) -> Outcome:
        return await asyncio.to_thread(
            release_hold, rt.repo_for(app.git), app, env, by=actor(args.by),
            reason=args.reason or "", max_attempts=rt.settings.git.max_push_attempts)

    return _control(args, secrets, run)


def cmd_rollback(args: argparse.Namespace, secrets: SecretRegistry) -> ExitCode:
    from image_updater.engine.holds import RollbackDeps, RollbackRequest, rollback

    # argparse keeps --to and --steps apart; RollbackRequest checks their values
    req = RollbackRequest(to=args.to, steps=1 if args.steps is None else args.steps,
                          reason=args.reason or "", by=actor(args.by), retag=args.retag,
                          chosen=args.to is not None or args.steps is not None,
                          replace_hold=args.replace_hold)

    async def run(rt: Runtime, app: App, env: Environment) -> Outcome:
        repo = rt.repo_for(app.git)
        deps = RollbackDeps(repo=repo, registry_for=rt.registry_for,
                            approvals=rt.approvals_for(app.git, repo),
                            values_file_bytes=rt.settings.limits.values_file_bytes,
                            max_attempts=rt.settings.git.max_push_attempts)
        return await rollback(app, env, req, deps, now=_now())

    return _control(args, secrets, run)


def _now() -> datetime:
    return datetime.now(UTC)


def _control(args: argparse.Namespace, secrets: SecretRegistry,
             act: Callable[[Runtime, App, Environment], Coroutine[Any, Any, Outcome]]
             ) -> ExitCode:
    """Run one of hold/release/rollback with the adapters, print its line, close them."""
    from image_updater.wiring.runtime import Runtime

    settings = _settings(args)
    _start_logging(settings, secrets)
    app, env = _one_env(args, settings)

    async def run() -> Outcome:
        runtime = Runtime(settings, secrets=secrets)
        try:
            outcome = await act(runtime, app, env)
            await tell(settings, secrets, runtime.metrics, _control_event(outcome, secrets))
            return outcome
        finally:
            await runtime.aclose()

    try:
        outcome = asyncio.run(run())
    except ImageUpdaterError as exc:
        print(scrub(f"error: {exc}", secrets), file=sys.stderr)
        return exit_code_for(exc)
    print(scrub(outcome.line(), secrets))
    return ExitCode.OK


def _control_event(outcome: Outcome, secrets: SecretRegistry) -> CommandEvent:
    from image_updater.notify.events import CommandEvent

    kinds: dict[str, EventKind] = {"hold": "hold.placed", "release": "hold.released",
                                   "rollback": "rollback.done"}
    hold = outcome.hold
    return CommandEvent(kinds[outcome.action], hold.app, hold.env,
                        scrub(outcome.line(), secrets),
                        {"by": hold.by, "reason": hold.reason, "digest": outcome.digest or "",
                         "previous": outcome.previous or "", "commit": outcome.sha or ""},
                        link=outcome.pull_request)


def _only_env(app: App, env: str) -> App:
    """``app`` with only environment ``env`` (a clear error when it has none of that name)."""
    from dataclasses import replace

    return replace(app, environments=(find_env(app, env, then="fix --env."),))

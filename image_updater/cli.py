"""The command line: each command parses its arguments and calls one library function.

Exit codes are :class:`image_updater.exit_codes.ExitCode` (stable; scripts and Argo CD hooks
rely on them); the README's list is generated from it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from image_updater import __version__
from image_updater.errors import ImageUpdaterError
from image_updater.exit_codes import ExitCode, epilog, exit_code_for
from image_updater.model import STRATEGIES

log = logging.getLogger("image_updater.cli")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings file (registries, git, forges)")
    p.add_argument("--log-format", choices=("text", "json"), help="default: text")
    p.add_argument("--log-level", default=None, help="debug, info (default), warning, error")


def _policies(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policies", metavar="PATH", action="append",
                   help="policy file or directory (repeatable; default: ./policies)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-updater",
        description="GitOps environment promotion by registry tags.",
        epilog=epilog())
    parser.add_argument("--version", action="version", version=f"image-updater {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon: poll, serve metrics/health/webhooks")
    _common(run)
    _policies(run)
    run.add_argument("--interval", type=float, help="seconds between cycles (default 120)")

    once = sub.add_parser("once", help="run one reconcile cycle and exit")
    _common(once)
    _policies(once)
    once.add_argument("--dry-run", action="store_true",
                      help="print planned diffs and commit messages; write nothing")
    once.add_argument("--app", action="append", help="only these apps (repeatable)")

    val = sub.add_parser("validate", help="check policy files (and --config) for every problem")
    _common(val)
    _policies(val)
    val.add_argument("paths", nargs="*", help="policy files or directories (default ./policies)")
    val.add_argument("--values-root", metavar="DIR",
                     help="a checkout of the deploy repository: also check files and keys exist")

    chk = sub.add_parser("check", help="show which tag a policy would choose, and why")
    _common(chk)
    chk.add_argument("image", help="repository reference, e.g. ghcr.io/org/app")
    chk.add_argument("--strategy", default="semver",
                     choices=STRATEGIES)
    chk.add_argument("--constraint", help="semver constraint, e.g. '^1.2'")
    chk.add_argument("--tag", help="digest strategy: the tag to follow")
    chk.add_argument("--allow", help="regex a tag must fully match")
    chk.add_argument("--ignore", action="append", default=[], help="glob or /regex/ to drop")
    chk.add_argument("--extract", help="regex with (?P<value>...) to sort on")
    chk.add_argument("--order", choices=("asc", "desc"), default="asc")
    chk.add_argument("--strict", action="store_true", help="semver: no coercion of 1.2 to 1.2.0")
    chk.add_argument("--platform", help="e.g. linux/amd64")

    ret = sub.add_parser("retag", help="point DST at exactly the image SRC names (by digest)")
    _common(ret)
    ret.add_argument("src", help="source image: repo:tag or repo@sha256:...")
    ret.add_argument("dst", help="destination image with tag: repo:tag")
    ret.add_argument("--digest", help="promote exactly this digest (must exist in SRC's repo)")
    ret.add_argument("--expect-current", metavar="DIGEST|none",
                     help="compare-and-swap: refuse unless DST currently points here")

    pro = sub.add_parser("promote", help="retag the digest an environment runs to the next one")
    _common(pro)
    _policies(pro)
    pro.add_argument("app", nargs="?", help="app name (default: $IMAGE_UPDATER_APP)")
    pro.add_argument("--from", dest="source", help="environment whose deployed digest moves on")
    pro.add_argument("--to", dest="target", help="environment whose tag receives it")
    pro.add_argument("--digest", help="the digest that was tested; refuse if git disagrees "
                     "(default: $IMAGE_UPDATER_DIGEST; required unless --from-git)")
    pro.add_argument("--from-git", action="store_true",
                     help="no tested digest: promote whatever git says --from runs now "
                          "(for people promoting by hand, never for jobs)")
    pro.add_argument("--force", action="store_true",
                     help="promote even when --to is held (the output and log say so)")
    _promote_server_args(pro)
    _control_commands(sub)
    _status_commands(sub)
    return parser


def _promote_server_args(pro: argparse.ArgumentParser) -> None:
    """``promote --server``: the daemon promotes; the job needs only an identity."""
    pro.add_argument("--server", metavar="URL",
                     help="ask the image-updater daemon at URL to promote (no git or registry "
                          "credentials needed; default: $IMAGE_UPDATER_SERVER)")
    who = pro.add_mutually_exclusive_group()
    who.add_argument("--token-file", metavar="FILE", help="--server: a static API token's file")
    who.add_argument("--service-account-token", nargs="?", const="", metavar="PATH",
                     help="--server: a projected service-account token (audience "
                          "image-updater; default path /var/run/secrets/tokens/image-updater)")
    pro.add_argument("--evidence", action="append", default=[], metavar="KEY=VALUE",
                     help="--server: recorded in the trailers of the commit that lands the "
                          "target environment (repeatable), e.g. job=$JOB_NAME")


def _status_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sta = sub.add_parser("status", help="what runs where, since when, and its state")
    _common(sta)
    _policies(sta)
    sta.add_argument("app", nargs="?", help="only this app (default: every app)")
    sta.add_argument("--env", help="only this environment")
    sta.add_argument("--format", choices=("table", "json"), default="table")

    his = sub.add_parser("history", help="every change of an app's environments, from git")
    _common(his)
    _policies(his)
    his.add_argument("app", help="app name")
    his.add_argument("env", nargs="?", help="only this environment")
    his.add_argument("--limit", type=int, metavar="N", help="newest N changes (default: all)")
    his.add_argument("--format", choices=("table", "json"), default="table")


def _control_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """hold, release, rollback: a person's commands on one environment, committed to git."""
    by_help = "who (default: $IMAGE_UPDATER_ACTOR, else git's user.email, else the OS user)"
    hold = sub.add_parser("hold", help="stop the daemon writing to an environment (in git)")
    rel = sub.add_parser("release", help="end a hold or rollback; the next cycle moves on")
    back = sub.add_parser("rollback", help="write an earlier digest to an environment and "
                          "hold it there")
    for p in (hold, rel, back):
        _common(p)
        _policies(p)
        p.add_argument("app", help="app name")
        p.add_argument("env", help="environment name")
        p.add_argument("--by", help=by_help)
    hold.add_argument("--reason", required=True, help="why (goes into the commit and status)")
    rel.add_argument("--reason", help="why (goes into the commit)")
    back.add_argument("--reason", help="why (goes into the commit and the hold)")
    target = back.add_mutually_exclusive_group()
    target.add_argument("--to", metavar="DIGEST", help="roll back to this digest (must be in "
                        "the registry; one the env never ran follows its approval rule)")
    target.add_argument("--steps", type=int, metavar="N",
                        help="roll back N digests in the values file's history (default 1)")
    back.add_argument("--retag", action="store_true",
                      help="also move the environment's tag back (compare-and-swap)")
    back.add_argument("--replace-hold", action="store_true",
                      help="replace a person's hold on ENV in the same commit (its owner "
                           "agreed); without it a held ENV is refused")



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from image_updater.commands import dispatch
    from image_updater.secrets import SecretRegistry

    secrets = SecretRegistry()  # the process's one registry: logs, adapters and output share it
    try:
        return dispatch(args, secrets)
    except ImageUpdaterError as exc:
        from image_updater.observability.logs import scrub

        print(scrub(f"error: {exc}", secrets), file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception:  # a bug: say so, with the traceback, and a distinct code
        log.exception("internal error")
        print("error: internal error (a bug); please report it with the traceback above",
              file=sys.stderr)
        return ExitCode.INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

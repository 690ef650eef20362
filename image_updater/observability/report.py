"""Turn one cycle's :class:`~image_updater.changes.CycleResult` into log lines and metrics.

This is the only place where a cycle's outcome becomes a report: the engine records what
happened in the result and bumps no counter, so the logs, the metrics and the CLI's output
can never disagree about a cycle.
"""

from __future__ import annotations

import logging
from datetime import datetime

from image_updater.changes import (
    Change,
    CycleResult,
    Deployed,
    Failure,
    HeldEnv,
    PullRequestAction,
    Waiting,
)
from image_updater.observability.metrics import Metrics

#: the loggers the engine used before reporting moved here (dashboards filter on them)
RECONCILE_LOG = logging.getLogger("image_updater.reconcile")
APPROVAL_LOG = logging.getLogger("image_updater.approval")


def report(result: CycleResult, metrics: Metrics, log: logging.Logger = RECONCILE_LOG, *,
           retry_hint: str = "next cycle", log_outcomes: bool = True,
           pr_log: logging.Logger = APPROVAL_LOG) -> None:
    """Log and count everything ``result`` holds.

    ``retry_hint`` ends each failure's log line ("will retry in 120 s (next cycle)").
    ``log_outcomes=False`` counts everything without logging what happened to each
    environment, for a caller that prints the result itself (``image-updater once``), so
    that each outcome is shown once.
    """
    say: logging.Logger | None = log if log_outcomes else None
    say_pr: logging.Logger | None = pr_log if log_outcomes else None
    for failure in result.failures:
        metrics.errors.labels(app=failure.app, env=failure.env, reason=failure.reason).inc()
        if failure.unverified:
            metrics.verification_failures.labels(app=failure.app, env=failure.env,
                                                 reason=failure.unverified).inc()
        if say:
            _log_failure(say, failure, retry_hint)
    for waiting in result.waiting if say else ():
        _log_waiting(log, waiting)
    for push in result.pushes:
        metrics.git_pushes.labels(result=push.result).inc()
    for check in result.verifications:
        metrics.verifications.labels(result=check.result).inc()
    if not result.dry_run:
        for change in result.changes:
            if change.via == "commit":
                _committed(say, metrics, change)
    for action in result.pull_request_actions:
        _pull_request(say_pr, metrics, action)
    for deployed in result.deployed:
        _deployed(metrics, deployed)
    _holds(say, metrics, result)


def _holds(log: logging.Logger | None, metrics: Metrics, result: CycleResult) -> None:
    """Held environments are information: logged at info, counted in their own gauge."""
    held = {(h.app, h.env) for h in result.held}
    for h in result.held:
        if log:
            _log_held(log, h)
        metrics.set_held(h.app, h.env, h.kind, _timestamp(h.since))
    if result.dry_run:
        return
    seen = {(d.app, d.env) for d in result.deployed} | set(result.unchanged)
    seen |= {(c.app, c.env) for c in result.changes}
    for app, env in seen - held:  # covered by this cycle and not held: released, or never
        metrics.clear_held(app, env)


def _log_held(log: logging.Logger, h: HeldEnv) -> None:
    what = "rolled back" if h.kind == "rollback" else "held"
    wanted = f"; the policy would write {h.wanted[:19]}…" if h.wanted else ""
    pr = f"; pull request {h.pull_request} stays open" if h.pull_request else ""
    log.info("%s by %s since %s (%s): nothing written%s%s; image-updater release %s %s "
              "ends it", what, h.by, h.since, h.reason, wanted, pr, h.app, h.env,
              extra={"app": h.app, "env": h.env})


def _timestamp(since: str) -> float | None:
    try:
        return datetime.fromisoformat(since).timestamp()
    except ValueError:  # the holds file is edited by people; the gauge stays, without a time
        return None


def _log_failure(log: logging.Logger, failure: Failure, retry_hint: str) -> None:
    log.error("%s; will retry %s", failure.message.rstrip("."), retry_hint,
              extra={"app": failure.app, "env": failure.env, "image": failure.image})


def _log_waiting(log: logging.Logger, waiting: Waiting) -> None:
    log.info("%s/%s waits for tag %s: it does not exist yet (nothing promoted there so far); "
             "nothing is written until it does", waiting.app, waiting.env, waiting.tag,
             extra={"app": waiting.app, "env": waiting.env, "image": waiting.image})


def _committed(log: logging.Logger | None, metrics: Metrics, change: Change) -> None:
    metrics.updates.labels(app=change.app, env=change.env, mode="commit").inc()
    if log is None:  # the caller prints it
        return
    log.info("committed %s: %s", change.file, change.why,
             extra={"app": change.app, "env": change.env, "image": change.image})


def _pull_request(log: logging.Logger | None, metrics: Metrics, action: PullRequestAction
                  ) -> None:
    where = {"app": action.app, "env": action.env}
    if action.action in ("opened", "updated"):
        metrics.updates.labels(app=action.app, env=action.env, mode="pr").inc()
    if log is None:  # the caller prints it
        return
    if action.action in ("opened", "updated"):
        log.info("%s pull request %s: %s", action.action, action.url, action.why,
                 extra={**where, "image": action.image})
    elif action.action == "closed":
        log.info("closed obsolete pull request %s: %s", action.url, action.why, extra=where)
    else:
        log.info("%s was declined in %s (closed without merging); not proposing it again "
                 "(a new digest opens a new pull request)", action.digest[:19], action.url,
                 extra=where)


def _deployed(metrics: Metrics, deployed: Deployed) -> None:
    metrics.set_deployed(deployed.app, deployed.env, deployed.tag, deployed.digest)

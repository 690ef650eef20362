"""What people are told: events derived from a cycle's result or a person's command. Pure.

An :class:`Event` is one sentence about one app environment, with a few labelled details;
every sink renders the same event its own way (:mod:`~image_updater.notify.payloads`).

The cycle's result says what happened in that cycle only. What needs memory across cycles
(an environment failing for longer than a threshold, a hold seen for the first time, a pull
request that disappeared because it was merged) is kept by :class:`CycleWatch`, in memory:
after a restart an environment that still fails is reported again once the threshold has
passed anew, which is the safe side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from image_updater.changes import CycleResult, Failure

EventKind = Literal[
    "environment.updated", "environment.held", "environment.failing",
    "environment.recovered", "pull_request.opened", "pull_request.updated",
    "pull_request.merged", "pull_request.closed", "promotion.done", "promotion.refused",
    "hold.placed", "hold.released", "rollback.done",
]
#: every event kind, as routes name them in the settings
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
Severity = Literal["info", "warning", "error"]

_SEVERITY: dict[str, Severity] = {
    "environment.failing": "error", "promotion.refused": "warning",
    "environment.held": "warning", "hold.placed": "warning", "rollback.done": "warning",
    "pull_request.closed": "warning",
}


@dataclass(frozen=True)
class Event:
    """One thing that happened to one app environment."""

    kind: EventKind
    app: str
    env: str
    summary: str      # one plain-text sentence: the Slack fallback, the card's title
    time: datetime    # when it was observed (UTC)
    #: labelled facts shown under the summary ("image", "digest", "reason", …), in order
    details: tuple[tuple[str, str], ...] = ()
    link: str = ""    # a pull request or commit people can open

    @property
    def severity(self) -> Severity:
        return _SEVERITY.get(self.kind, "info")

    def as_data(self) -> dict[str, str]:
        """The event as flat JSON data (CloudEvents ``data``)."""
        data = {"app": self.app, "env": self.env, "summary": self.summary,
                "severity": self.severity}
        if self.link:
            data["link"] = self.link
        data.update(self.details)
        return data


@dataclass(frozen=True, kw_only=True)
class Route:
    """Which events go to ``sink``: an empty filter accepts everything."""

    sink: str
    apps: frozenset[str] = frozenset()
    envs: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()

    def accepts(self, event: Event) -> bool:
        return all(not wanted or value in wanted for wanted, value in (
            (self.apps, event.app), (self.envs, event.env), (self.events, event.kind)))


def sinks_for(event: Event, routes: Sequence[Route]) -> list[str]:
    """The sinks ``event`` goes to, each once, in the order the routes name them."""
    return list(dict.fromkeys(r.sink for r in routes if r.accepts(event)))


def cycle_events(result: CycleResult, *, now: datetime) -> list[Event]:
    """What a cycle did, one event each: updates committed and pull-request actions.

    A dry run changed nothing, so it tells nobody anything."""
    if result.dry_run:
        return []
    events = [Event("environment.updated", c.app, c.env,
                    f"{c.app}/{c.env} updated to {c.tag or c.digest} in {c.file}.", now,
                    (("image", c.image), ("tag", c.tag or ""), ("digest", c.digest),
                     ("file", c.file), ("why", c.why)))
              for c in result.changes if c.via == "commit"]
    for a in result.pull_request_actions:
        kind: EventKind = ("pull_request.closed" if a.action in ("closed", "declined")
                           else "pull_request.opened" if a.action == "opened"
                           else "pull_request.updated")
        what = {"opened": "waits for approval", "updated": "was updated and waits for approval",
                "closed": "was closed", "declined": "was closed by a person; its digest is "
                "not proposed again"}[a.action]
        events.append(Event(kind, a.app, a.env, f"The pull request for {a.app}/{a.env} {what}.",
                            now, (("image", a.image), ("why", a.why)), link=a.url))
    return events


class CycleWatch:
    """Memory across cycles, for the events no single result can tell (see module doc).

    ``failing_after``: an environment failing for at least this long is reported once, and
    its recovery is reported when it stops failing.
    """

    def __init__(self, *, failing_after: timedelta) -> None:
        self.failing_after = failing_after
        self._first_failed: dict[tuple[str, str], datetime] = {}
        self._alerted: set[tuple[str, str]] = set()
        self._held: set[tuple[str, str]] = set()
        self._open_prs: dict[tuple[str, str], str] = {}

    def events(self, result: CycleResult, *, now: datetime,
               covered: Iterable[tuple[str, str]]) -> list[Event]:
        """The events of ``result``; ``covered`` are the (app, env) the cycle looked at (a
        webhook cycle covers a few apps: the others keep their state)."""
        scope = set(covered)
        events = cycle_events(result, now=now)
        events += self._held_events(result, now, scope)
        events += self._failure_events(result, now, scope)
        if not result.dry_run:
            events += self._merged_events(result, now, scope)
        return events

    def _held_events(self, result: CycleResult, now: datetime,
                     scope: set[tuple[str, str]]) -> list[Event]:
        held = {(h.app, h.env): h for h in result.held}
        new = [h for key, h in held.items() if key not in self._held]
        self._held = (self._held - scope) | set(held)
        return [Event("environment.held", h.app, h.env,
                      f"{h.app}/{h.env} is held by {h.by} since {h.since}: nothing is written "
                      "there until it is released.", now,
                      (("kind", h.kind), ("by", h.by), ("reason", h.reason),
                       ("wanted", h.wanted)), link=h.pull_request) for h in new]

    def _failure_events(self, result: CycleResult, now: datetime,
                        scope: set[tuple[str, str]]) -> list[Event]:
        failing = {(f.app, f.env): f for f in result.failures}
        events = []
        for key, failure in failing.items():
            since = self._first_failed.setdefault(key, now)
            if key not in self._alerted and now - since >= self.failing_after:
                self._alerted.add(key)
                events.append(_failing(failure, since, now))
        for key in [k for k in self._first_failed if k in scope and k not in failing]:
            since = self._first_failed.pop(key)
            if key in self._alerted:
                self._alerted.discard(key)
                events.append(Event("environment.recovered", key[0], key[1],
                                    f"{key[0]}/{key[1]} works again (it failed since "
                                    f"{since.isoformat(timespec='seconds')}).", now))
        return events

    def _merged_events(self, result: CycleResult, now: datetime,
                       scope: set[tuple[str, str]]) -> list[Event]:
        """A pull request open before and gone now, with nothing closed by us and the
        environment current, was merged by a person."""
        acted = {(a.app, a.env) for a in result.pull_request_actions}
        current = set(result.unchanged)
        events = [Event("pull_request.merged", app, env,
                        f"The pull request for {app}/{env} was merged.", now, link=url)
                  for (app, env), url in self._open_prs.items()
                  if (app, env) in scope and (app, env) not in result.pull_requests
                  and (app, env) not in acted and (app, env) in current]
        self._open_prs = {k: v for k, v in self._open_prs.items()
                          if k not in scope or k in result.pull_requests}
        self._open_prs.update(result.pull_requests)
        return events


def _failing(failure: Failure, since: datetime, now: datetime) -> Event:
    minutes = int((now - since).total_seconds() // 60)
    return Event("environment.failing", failure.app, failure.env,
                 f"{failure.app}/{failure.env} has been failing for {minutes} min "
                 f"({failure.reason}).", now,
                 (("reason", failure.reason), ("message", failure.message),
                  ("since", since.isoformat(timespec="seconds")), ("image", failure.image)))


@dataclass(frozen=True)
class CommandEvent:
    """A person's command's outcome, before it becomes an :class:`Event` (see :func:`told`)."""

    kind: EventKind
    app: str
    env: str
    summary: str
    details: dict[str, str] = field(default_factory=dict)
    link: str = ""


def told(command: CommandEvent, *, now: datetime) -> Event:
    """``command`` as an event observed at ``now``; empty details are left out."""
    return Event(command.kind, command.app, command.env, command.summary, now,
                 tuple((k, v) for k, v in command.details.items() if v), command.link)

"""The deploy repository: a cached working clone that is synced, edited, committed and pushed.

Over 450 lines: one object whose steps share the clone, its state and its lock; the parts
that stand alone (stderr classification, the lock, messages, ref names) live beside it.

GitPython is imported only here and in :mod:`~image_updater.gitops.stderr`, which classifies
git's stderr: every git failure leaves this module as one of ours (``GitError``,
``GitAuthError``, ``GitUnavailableError``, ``PushRejectedError``), redacted and truncated.

A push race is resolved by *re-planning*, never by rebasing: after a rejected push the clone is
reset to the new remote head and the caller's ``plan`` runs again on it, so every edit is
derived from the files as they are now, applied exactly once, and never written over someone
else's change.

Use one ``DeployRepo`` per (url, branch) per process. Its clone is locked against other
threads and other processes sharing the cache directory (see :mod:`.clonelock`): scheduler
threads may share an instance, and ``once`` may run beside the daemon.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from image_updater.errors import (
    ConfigError,
    GitError,
    PushRejectedError,
    ValuesError,
    truncate,
)
from image_updater.gitops.clonelock import CloneLock
from image_updater.gitops.credentials import GitAuth, redact_url, url_has_password
from image_updater.gitops.message import parse_trailers
from image_updater.gitops.signing import CommitSigner, SigningSession
from image_updater.gitops.stderr import (
    classify,
    is_corrupt_cache,
    is_missing_ref,
    is_push_race,
    output_of,
)
from image_updater.gitrefs import check_branch
from image_updater.model import check_repo_path as check_path
from image_updater.observability.logs import redact

log = logging.getLogger(__name__)

Reader = Callable[[str], str | None]

_SYMLINK_MODE = 0o120000
_TEXT_CACHE_SIZE = 100_000  # blob texts kept (values files: a few hundred bytes each)

@dataclass(frozen=True)
class Plan:
    """What to commit: path (relative to the repository root) → complete new file text."""

    files: Mapping[str, str]
    message: str


@dataclass(frozen=True)
class PushResult:
    sha: str | None       # the pushed commit; None when the plan changed nothing
    attempts: int         # how many times the plan was derived (1 without a race)
    rejected_count: int   # pushes refused because somebody else pushed first


@dataclass(frozen=True)
class TrailerRecord:
    """One image-updater commit read back from history."""

    sha: str
    trailers: tuple[Mapping[str, str], ...]  # one mapping per change, see message.parse_trailers


PlanFn = Callable[[Reader], Plan]


class _CorruptCache(Exception):
    """The cached clone cannot be used; it is deleted and cloned again."""




class DeployRepo:
    """A persistent working clone of one branch of the deploy repository."""

    def __init__(
        self,
        *,
        url: str,
        branch: str,
        cache_dir: Path | str,
        auth: GitAuth | None = None,
        author_name: str = "image-updater",
        author_email: str = "image-updater@localhost",
        clock: Callable[[], datetime] | None = None,
        network_timeout: float = 120.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        jitter: Callable[[], float] | None = None,
        lock_timeout: float = 300.0,
        signer: CommitSigner | None = None,
    ) -> None:
        """
        ``clock`` (if given) dates the commits, so tests get reproducible shas.
        ``network_timeout`` (seconds) bounds each fetch, push and ls-remote; git is killed after.
        ``backoff_base``/``backoff_cap`` (seconds) shape the delay between push attempts after
        a race; ``jitter`` returns a number in [0, 1) that spreads competing writers apart.
        ``lock_timeout`` (seconds) bounds the wait while another process uses the clone.
        ``signer`` (if given) signs every commit this clone makes (see :mod:`.signing`).
        """
        if not url:
            raise ConfigError("The deploy repository URL is empty; set git.url in the policy.")
        if url_has_password(url):
            raise ConfigError(
                f"The deploy repository URL {redact_url(url)} contains a password or token; "
                "remove it from the URL and configure a token file or variable instead."
            )
        self.url = url
        self.branch = check_branch(branch)
        self.auth = auth or GitAuth.none()
        self.author_name = author_name
        self.author_email = author_email
        self.clock = clock
        self.network_timeout = network_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.jitter = jitter or random.Random().random
        self.signer = signer
        self.path = Path(cache_dir) / _cache_name(url, branch)
        self._repo: git.Repo | None = None
        self._head: str | None = None
        self._cached_reader: tuple[str, Reader] | None = None
        self._texts: dict[str, str] = {}  # blob id -> text, see _bulk_reader
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = CloneLock(self.lock_path, what=f"{self.path} of {self.shown_url}",
                               timeout=lock_timeout)

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    # ---- public API ------------------------------------------------------------------------

    @contextmanager
    def locked(self, purpose: str = "the cycle") -> Iterator[None]:
        """Hold the clone against other threads and processes for a whole unit of work.

        Every method holds it too; wrapping a read-plan-commit-push sequence in one
        ``with repo.locked():`` keeps another process from moving the clone between its
        steps. A process that waits logs who holds the clone; after ``lock_timeout`` it
        raises ``GitUnavailableError`` (temporary). ``purpose`` names the work in both.
        """
        with self._lock.hold(purpose) as changed:
            if changed:
                self._forget()  # another process used the clone: nothing cached still holds
            yield

    def sync(self) -> str:
        """Fetch, hard-reset and clean the clone to ``origin/<branch>``; return the head sha."""
        with self.locked("the sync"):
            self._cached_reader = None  # a re-cloned cache must not be read through old objects
            try:
                self._head = self._sync_once()
            except _CorruptCache as exc:
                log.warning("The cached clone %s of %s is unusable (%s); deleting it and cloning "
                            "again.", self.path, self.shown_url, exc)
                self._discard()
                try:
                    self._head = self._sync_once()
                except _CorruptCache as again:
                    raise GitError(
                        f"The fresh clone of {self.shown_url} in {self.path} cannot be used "
                        f"({again}); check the disk and permissions of the cache directory."
                    ) from again
            return self._head

    def read(self, path: str) -> str | None:
        """The text of ``path`` at the synced head (syncing first if needed); None if absent."""
        with self.locked("a read"):
            head = self._head or self.sync()
            # One tree object per head: its entries are parsed once, not once per file.
            if self._cached_reader is None or self._cached_reader[0] != head:
                self._cached_reader = (head, self._bulk_reader(head))
            return self._cached_reader[1](path)

    def commit_and_push(self, plan: PlanFn, *, max_attempts: int = 5,
                        sleep: Callable[[float], None] = time.sleep) -> PushResult:
        """Derive a plan on the current head, commit it, push; on a race re-derive and retry."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        with self.locked("the commit and push"):
            rejected = 0
            for attempt in range(1, max_attempts + 1):
                head = self.sync()
                sha = self._commit_plan(plan(self._bulk_reader(head)), head)
                if sha is None:
                    return PushResult(sha=None, attempts=attempt, rejected_count=rejected)
                if self._push(f"HEAD:refs/heads/{self.branch}"):
                    self._head = sha
                    return PushResult(sha=sha, attempts=attempt, rejected_count=rejected)
                rejected += 1
                if attempt < max_attempts:
                    delay = self._backoff(rejected)
                    log.info("Push to %s of %s was rejected because somebody else pushed first; "
                             "re-planning on the new head, attempt %d/%d in %.1f s.",
                             self.branch, self.shown_url, attempt + 1, max_attempts, delay)
                    sleep(delay)
            raise PushRejectedError(
                f"Pushing to branch {self.branch} of {self.shown_url} was rejected {rejected} "
                "times because others pushed first; the update will be retried next cycle."
            )

    def push_branch(self, branch: str, plan: PlanFn, *, base: str | None = None) -> str | None:
        """Force-update ``branch`` to one commit on top of ``base``'s head; return its sha.

        Used for pull requests. ``plan`` is derived from that head, as in
        :meth:`commit_and_push`, so the branch never undoes what others committed to the
        base meanwhile. If the remote branch already holds exactly this change on the
        current base, it is left alone (no force-push noise on the pull request). If the
        plan changes nothing on the base (it already holds the change), nothing is pushed
        and None is returned: there is nothing to propose.
        """
        check_branch(branch)
        base = check_branch(base or self.branch, what="base branch")
        if branch in (base, self.branch):
            raise ConfigError(
                f"The pull request branch {branch!r} is the branch image-updater watches or the "
                "base; choose a separate branch prefix for pull requests."
            )
        with self.locked("the pull request branch push"):
            # sync() leaves a clean tree; checking out another base from it stays clean
            base_head = self.sync() if base == self.branch else self._sync_to(base)
            self._local("checkout", "-q", "-f", "--detach", base_head)
            sha = self._commit_plan(plan(self._reader(base_head)), base_head)
            if sha is None:
                return None
            existing = self._fetch(branch, missing_ok=True)
            if existing is not None and self._same_change(existing, sha, base_head):
                return existing
            if not self._push(f"+{sha}:refs/heads/{branch}"):
                raise PushRejectedError(
                    f"The forced push of branch {branch} to {self.shown_url} was refused; "
                    "it will be retried next cycle."
                )
            return sha

    def restore_branch(self, branch: str, sha: str) -> None:
        """Force ``branch`` back to ``sha`` (a commit it held before, fetched by this clone)."""
        check_branch(branch)
        if branch == self.branch:
            raise ConfigError(f"Refusing to rewrite {branch!r}: it is the branch being watched.")
        with self.locked("the branch restore"):
            if not self._push(f"+{sha}:refs/heads/{branch}"):
                raise PushRejectedError(
                    f"Restoring branch {branch} of {self.shown_url} was refused; it is "
                    "repaired on the next cycle.")

    def remote_branch_sha(self, branch: str) -> str | None:
        """The sha ``branch`` has on the remote now (``git ls-remote``), or None if absent."""
        ref = f"refs/heads/{check_branch(branch)}"
        with self.locked("the branch listing"):
            out = self._network("ls-remote", "--heads", "origin", ref, action="listing branches")
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:
                return sha
        return None

    def delete_remote_branch(self, branch: str) -> bool:
        """Delete ``branch`` on the remote; False if it was already gone."""
        check_branch(branch)
        if branch == self.branch:
            raise ConfigError(f"Refusing to delete {branch!r}: it is the branch being watched.")
        with self.locked("the branch deletion"):
            if self.remote_branch_sha(branch) is None:
                return False
            self._network("push", "--porcelain", "origin", f":refs/heads/{branch}",
                          action=f"deleting branch {branch}")
            return True

    def log_trailers(self, path: str | None = None, limit: int = 50) -> list[TrailerRecord]:
        """The newest ``limit`` image-updater commits at the synced head (touching ``path``)."""
        with self.locked("the history read"):
            head = self._head or self.sync()
            args = ["-n", str(limit), "--grep=^Image-Updater-App: ", "--format=%H%x1f%B%x1e",
                    head]
            if path is not None:
                args += ["--", str(check_path(path))]
            out = self._local("log", *args)
        records = []
        for entry in out.split("\x1e"):
            sha, sep, body = entry.strip().partition("\x1f")
            trailers = parse_trailers(body) if sep else []
            if trailers:
                records.append(TrailerRecord(sha=sha, trailers=tuple(trailers)))
        return records

    def file_versions(self, path: str, limit: int = 200) -> list[tuple[str, str | None]]:
        """``(sha, text)`` of ``path`` after each of the newest ``limit`` commits that
        changed it at the synced head, newest first (text None: the commit deleted it)."""
        with self.locked("the history read"):
            head = self._head or self.sync()
            shas = self._local("log", "-n", str(limit), "--format=%H", head, "--",
                               str(check_path(path))).split()
            return [(sha, self._reader(sha)(path)) for sha in shas]

    # ---- clone lifecycle -------------------------------------------------------------------

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        try:
            repo = git.Repo(self.path)
            if Path(repo.working_dir).resolve() != self.path.resolve():
                raise _CorruptCache("the cache directory is not the top of a clone")
        except (InvalidGitRepositoryError, NoSuchPathError, _CorruptCache, ValueError) as exc:
            if self.path.exists():
                log.warning("The cache %s is not a usable clone (%s); cloning %s again.",
                            self.path, type(exc).__name__, self.shown_url)
                shutil.rmtree(self.path)
            repo = self._init()
        self._repo = repo
        self._set_remote(repo)
        return repo

    def _init(self) -> git.Repo:
        # init + fetch of one branch instead of `git clone`: a missing branch then gets its
        # own clear error, and the URL never appears on a command line.
        self.path.mkdir(parents=True, exist_ok=True)
        with self._translate("creating the cache clone"):
            return git.Repo.init(self.path)

    def _set_remote(self, repo: git.Repo) -> None:
        try:
            current = repo.git.config("--get", "remote.origin.url", env=self._env())
        except GitCommandError:
            current = None
        if current != self.url:
            verb = "add" if current is None else "set-url"
            with self._translate("configuring the remote"):
                repo.git.remote(verb, "origin", self.url, env=self._env())

    def _forget(self) -> None:
        """Drop what this process knows of the clone; it is read from disk again on use."""
        if self._repo is not None:
            self._repo.close()  # GitPython's cat-file helpers hold the old clone's files open
        self._repo = None
        self._head = None
        self._cached_reader = None

    def _discard(self) -> None:
        self._forget()
        shutil.rmtree(self.path, ignore_errors=True)

    def _sync_once(self) -> str:
        try:
            self._open()
        except GitError as exc:
            raise _CorruptCache(str(exc)) from exc
        remote_head = self._fetch(self.branch)
        assert remote_head is not None
        ref = f"refs/remotes/origin/{self.branch}"
        try:
            # -f and reset --hard discard edits, -B leaves a detached head, clean -ffdx removes
            # untracked and ignored files (even nested repositories): nothing carries over.
            self._local("checkout", "-q", "-f", "-B", self.branch, ref)
            self._local("reset", "-q", "--hard", ref)
            self._local("clean", "-q", "-ffdx")
            head = self._local("rev-parse", "HEAD")
        except GitError as exc:
            raise _CorruptCache(str(exc)) from exc
        if head != remote_head:
            raise _CorruptCache(f"HEAD is {head} after reset, not {remote_head}")
        return head

    def _sync_to(self, branch: str) -> str:
        self.sync()
        head = self._fetch(branch)
        assert head is not None
        return head

    def _fetch(self, branch: str, *, missing_ok: bool = False) -> str | None:
        """Fetch ``branch`` into ``refs/remotes/origin/<branch>``; return its sha."""
        refspec = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        try:
            self._network("fetch", "-q", "--no-tags", "origin", refspec,
                          action=f"fetching branch {branch}")
        except GitError as exc:
            if is_missing_ref(str(exc)):
                if missing_ok:
                    return None
                raise GitError(
                    f"The branch {branch} does not exist in {self.shown_url}; create it there "
                    "(push an initial commit) or fix the branch in the policy's git settings."
                ) from exc
            if is_corrupt_cache(exc):
                raise _CorruptCache(str(exc)) from exc
            raise
        return self._local("rev-parse", f"refs/remotes/origin/{branch}")

    # ---- editing ---------------------------------------------------------------------------

    def _reader(self, head: str) -> Reader:
        tree = self._open().commit(head).tree

        def read(path: str) -> str | None:
            rel = str(check_path(path))
            try:
                obj = tree / rel
            except KeyError:
                return None
            if obj.type != "blob" or obj.mode == _SYMLINK_MODE:
                raise self._not_a_file(rel, obj.type if obj.type != "blob" else "link")
            return self._decoded(rel, obj.data_stream.read())

        return read

    def _bulk_reader(self, head: str) -> Reader:
        """A reader for many files at one head (a cycle reads every values file).

        One ``git ls-tree -r`` lists the blob of every path, and texts are kept by blob id,
        so an unchanged file is read from git once per process, not once per cycle; walking
        GitPython trees instead cost a ``cat-file`` per folder per file. Same answers as
        :meth:`_reader`.
        """
        entries: dict[str, tuple[int, str, str]] = {}
        for line in self._local("ls-tree", "-r", "-z", "--full-tree", head).split("\0"):
            meta, tab, path = line.partition("\t")
            if tab:
                mode, kind, blob = meta.split(" ")
                entries[path] = (int(mode, 8), kind, blob)
        if len(self._texts) > _TEXT_CACHE_SIZE:
            self._texts.clear()

        def read(path: str) -> str | None:
            rel = str(check_path(path))
            entry = entries.get(rel)
            if entry is None:
                if any(p.startswith(rel + "/") for p in entries):
                    raise self._not_a_file(rel, "tree")
                return None
            mode, kind, blob = entry
            if kind != "blob" or mode == _SYMLINK_MODE:
                raise self._not_a_file(rel, kind if kind != "blob" else "link")
            text = self._texts.get(blob)
            if text is None:
                text = self._texts[blob] = self._decoded(
                    rel, self._open().odb.stream(bytes.fromhex(blob)).read())
            return text

        return read

    def _not_a_file(self, rel: str, what: str) -> ValuesError:
        return ValuesError(f"{rel} in {self.shown_url} is a {what}, not a regular file; point "
                           "the policy at the values file itself.")

    def _decoded(self, rel: str, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValuesError(
                f"{rel} in {self.shown_url} is not UTF-8 text; values files must be UTF-8."
            ) from None

    def _commit_plan(self, plan: Plan, head: str) -> str | None:
        """Write the plan's files that differ from ``head`` and commit them; None if none do."""
        read = self._bulk_reader(head)
        changed = {str(check_path(p)): text for p, text in plan.files.items() if read(p) != text}
        if not changed:
            return None
        if not plan.message.strip():
            raise ValueError("A plan with file changes needs a commit message.")
        for rel, text in changed.items():
            self._write(rel, text)
        self._local("add", "--", *changed)
        self._commit(plan.message)
        return self._local("rev-parse", "HEAD")

    def _commit(self, message: str) -> None:
        """The one place image-updater makes a commit: signed when a signer is configured."""
        # From a file, not -m: one argument may hold at most 128 KiB (MAX_ARG_STRLEN), and
        # the message of a cycle that moves a thousand environments is longer than that.
        file = Path(self._open().git_dir) / "IMAGE_UPDATER_COMMIT_MSG"
        file.write_text(message, encoding="utf-8")
        args = ("-q", "--no-verify", "--cleanup=whitespace", "-F", str(file))
        if self.signer is None:
            self._local("commit", *args)
            return
        with self.signer.session() as signing:
            try:
                self._open().git.commit("-S", *args, env=self._env(signing=signing))
            except GitCommandError as exc:
                said = truncate(redact(output_of(exc), self.auth.secrets))
                raise ConfigError(
                    f"Signing a commit for {self.shown_url} with {self.signer.describe()} "
                    f"failed: {said}; check git.signing in the settings.") from exc

    def _write(self, rel: str, text: str) -> None:
        root = self.path.resolve()
        target = root / rel
        # A tracked symlink could point outside the clone; refuse any linked component.
        for parent in [*reversed(target.relative_to(root).parents), target.relative_to(root)]:
            if (root / parent).is_symlink():
                raise ValuesError(
                    f"{rel} in {self.shown_url} goes through the symbolic link {parent}; "
                    "point the policy at the real values file."
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))  # bytes: no newline translation

    def _same_change(self, existing: str, sha: str, base_head: str) -> bool:
        """True when the remote branch ``existing`` already proposes what ``sha`` does.

        It need not sit on the newest base: unrelated commits to the base (the daemon's own
        dev and staging commits, for one) must not rewrite a pending pull request, which
        would dismiss its approvals and re-run its checks. It is the same change when its
        one parent is an ancestor of the base, it touches the same files, and those files
        read the same as in ``sha`` (so the base has not changed them since either).
        """
        if existing == sha:
            return True
        if sha == base_head:
            return False
        parents = self._local("rev-list", "--parents", "-n", "1", existing).split()[1:]
        if len(parents) != 1:
            return False
        parent = parents[0]
        if parent != base_head and not self._git_ok("merge-base", "--is-ancestor", parent,
                                                     base_head):
            return False
        theirs = self._local("diff", "--name-only", parent, existing).splitlines()
        ours = self._local("diff", "--name-only", base_head, sha).splitlines()
        if sorted(theirs) != sorted(ours) or not ours:
            return False
        return self._git_ok("diff", "--quiet", existing, sha, "--", *ours)

    def _push(self, refspec: str) -> bool:
        """Push; False when refused because the remote moved (a race), else raise or True."""
        try:
            self._network("push", "--porcelain", "origin", refspec,
                          action=f"pushing to {refspec.rpartition(':')[2]}", raw=True)
        except _PushRaced:
            return False
        return True

    def _backoff(self, rejected: int) -> float:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (rejected - 1))
        return delay * (0.5 + 0.5 * self.jitter())

    # ---- running git -----------------------------------------------------------------------

    def _env(self, *, network: bool = False,
             signing: SigningSession | None = None) -> dict[str, str]:
        env = {
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a human at a prompt
            "GIT_ASKPASS": "",           # nor ask a GUI helper inherited from the environment
            "SSH_ASKPASS": "",
            "GIT_AUTHOR_NAME": self.author_name, "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name, "GIT_COMMITTER_EMAIL": self.author_email,
        }
        if self.clock is not None:
            now = self.clock()
            now = now if now.tzinfo else now.replace(tzinfo=UTC)
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"{int(now.timestamp())} +0000"
        # Bytes in = bytes out, and no signing prompt or hook from the user's own config:
        # a commit is signed only with image-updater's own key (later pairs override).
        config = [("core.autocrlf", "false"), ("core.safecrlf", "false"),
                  ("commit.gpgsign", "false"), ("core.hooksPath", "/dev/null")]
        if signing is not None:
            config += signing.config
            env.update(signing.env)
        if network:
            config += self.auth.config()
            env.update(self.auth.environment())  # the token only ever lives here
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    def _git_ok(self, cmd: str, *args: str) -> bool:
        """Run a local git command that answers by its exit status (0: True, 1: False)."""
        try:
            getattr(self._open().git, cmd)(*args, env=self._env())
        except GitCommandError as exc:
            if exc.status == 1:
                return False
            raise self._error(f"running git {cmd}", truncate(output_of(exc))) from exc
        return True

    def _local(self, cmd: str, *args: str) -> str:
        with self._translate(f"running git {cmd}"):
            out: str = getattr(self._open().git, cmd)(*args, env=self._env())
            return out

    def _network(self, cmd: str, *args: str, action: str, raw: bool = False) -> str:
        env = self._env(network=True)
        with self._translate(action, push=raw):
            out: str = getattr(self._open().git, cmd)(
                *args, env=env, kill_after_timeout=self.network_timeout)
            return out

    @contextmanager
    def _translate(self, action: str, *, push: bool = False) -> Iterator[None]:
        try:
            yield
        except GitCommandError as exc:
            text = redact(output_of(exc), self.auth.secrets)
            if push and is_push_race(text):
                raise _PushRaced() from None
            raise self._error(action, truncate(text)) from exc

    def _error(self, action: str, text: str) -> GitError:
        return classify(action, text, url=self.shown_url, auth_hint=self.auth.describe(),
                        cache=self.path)


class _PushRaced(Exception):
    """The remote branch moved under our push (non-fast-forward, or a concurrent ref update)."""


def _cache_name(url: str, branch: str) -> str:
    """``<repo name>-<hash>``: readable in `ls`, unique per URL and branch, safe as a path."""
    stem = redact_url(url).rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem.removesuffix(".git"))[:40].lstrip(".") or "repo"
    digest = hashlib.sha256(f"{url}\n{branch}".encode()).hexdigest()[:16]
    return f"{stem}-{digest}"

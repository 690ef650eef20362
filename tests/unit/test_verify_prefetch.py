"""Verifier.prefetch: many verifications at once, then recorded by check() as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from image_updater.changes import Change, KeyChange, Verification
from image_updater.engine.plan import moving
from image_updater.engine.resolve import Resolved
from image_updater.engine.verify import VerifiedDigests, Verifier
from image_updater.errors import DigestMismatchError
from image_updater.model import App, Environment, GitTarget, Strategy, WriteSpec
from image_updater.registry.base import OCI_MANIFEST, Manifest, sha256_digest

BODIES = {f"app{i}": f'{{"n": {i}}}'.encode() for i in range(4)}
LIAR = "sha256:" + "9" * 64


class SlowRegistry:
    """get_manifest only: counts fetches and how many were in flight at once."""

    host = "registry.example.com"

    def __init__(self) -> None:
        self.fetches: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        self.fetches.append(repository)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        body = BODIES[repository.rsplit("/", 1)[1]]
        return Manifest(media_type=OCI_MANIFEST, digest=sha256_digest(body), body=body)


def item(i: int) -> tuple[App, Environment, str]:
    env = Environment(name="prod", file=f"app{i}/values.yaml",
                      strategy=Strategy(kind="digest", tag="prod"),
                      write=WriteSpec(digest=("image", "digest")))
    app = App(name=f"app{i}", image=f"registry.example.com/team/app{i}",
              git=GitTarget(url="file:///deploy.git"), environments=(env,))
    digest = sha256_digest(BODIES[f"app{i}"]) if i != 3 else LIAR  # app3's header lied
    return app, env, digest


def change(app: App, env: Environment, digest: str) -> Change:
    return Change(app=app.name, env=env.name, file=env.file, image=app.image, tag="prod",
                  digest=digest, keys=(KeyChange(key="image.digest", old=None, new=digest),),
                  why="test")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_prefetch_fetches_concurrently_and_check_records_each_once(
        loop: asyncio.AbstractEventLoop) -> None:
    registry = SlowRegistry()
    items = [item(i) for i in range(4)]
    record: list[Verification] = []

    async def run() -> None:
        verifier = Verifier(lambda _host: registry, VerifiedDigests(), loop)  # type: ignore[arg-type,return-value]

        def plan() -> None:  # a worker thread, as the git stage is
            verifier.prefetch([(a, e, "prod", d) for a, e, d in items])
            for a, e, d in items[:3]:
                verifier.check(a, e, change(a, e, d), record, [])
            with pytest.raises(DigestMismatchError, match="app3"):
                a, e, d = items[3]
                verifier.check(a, e, change(a, e, d), record, [])

        await asyncio.to_thread(plan)

    loop.run_until_complete(run())
    assert sorted(registry.fetches) == [f"team/app{i}" for i in range(4)]  # once each
    assert registry.most_in_flight == 4  # all at once, not one after another
    assert [(v.repository, v.result) for v in record] == [
        ("team/app0", "ok"), ("team/app1", "ok"), ("team/app2", "ok"),
        ("team/app3", "mismatch")]


def test_moving_lists_only_files_holding_another_digest() -> None:
    items = [item(i) for i in range(3)]
    texts = {items[0][1].file: f"image:\n  digest: {items[0][2]}\n",   # already there
             items[1][1].file: "image:\n  digest: ~\n"}                 # to be written
    resolved = [(a, e, Resolved(tag="prod", digest=d, reason="r")) for a, e, d in items]

    found = moving(resolved, texts.get)

    assert [(a.name, tag, digest) for a, _, tag, digest in found] == [
        ("app1", "prod", items[1][2])]  # app2's file is missing: the plan reports that

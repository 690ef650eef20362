"""Signature-gate benchmark (not a test): what ``verify`` costs in registry requests.

N apps x 3 environment tags, every environment gated by one cosign key, against a local
registry. Measures with the OCI client's ``on_request`` hook:

- steady cycles (git already holds every digest): requests per tracked tag, target 1.0,
  the same as without gates;
- one cycle after 1% of the ``dev`` tags moved to new, signed digests: the extra requests
  per new digest, split into the digest verification (one manifest GET) and the signature
  gate (the ``.sig`` tag, its layer, the referrers lookup), as the cycle result reports them;
- a steady cycle after that: 1.0 again.

Run from the repository root::

    python -m bench.signatures --apps 50
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench import _common as common
from image_updater.changes import CycleResult
from image_updater.config.policies import load_policies
from image_updater.config.settings import GitSettings, RegistrySettings, Settings
from image_updater.engine.reconcile import reconcile
from image_updater.model import App
from image_updater.registry.oci import OciRegistry
from image_updater.registry.options import RegistryOptions
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.cosign import make_key_pair, sign_image
from tests.fixtures.registry import RegistryServer

TARGET_REQUESTS_PER_TAG = 1.0
MOVED_SHARE = 0.01


@dataclass
class Counter:
    count: int = 0

    def __call__(self, _method: str, _url: str) -> None:
        self.count += 1


@dataclass(frozen=True)
class Cycle:
    name: str
    requests: int
    result: CycleResult


def gate_policies(folder: Path, key: Path) -> None:
    """Every app's defaults require a signature by ``key``."""
    for file in folder.glob("*.yaml"):
        text = file.read_text()
        file.write_text(re.sub(r"(?m)^defaults:\n", f"defaults:\n  verify: {{cosign: {{keys: "
                                                    f"['{key}']}}}}\n", text, count=1))


async def _cycles(apps: Sequence[App], server: RegistryServer, work: Path, moved: int,
                  sign_moved: object) -> list[Cycle]:
    settings = Settings(cache_dir=str(work / "cache"),
                        registries=(RegistrySettings(host=server.host, insecure=True),),
                        git=GitSettings(author_name="bench", author_email="bench@example.com"))
    runtime = Runtime(settings, secrets=SecretRegistry())
    counter = Counter()
    registry = OciRegistry(RegistryOptions(host=server.host, insecure=True),
                           metrics=runtime.metrics, on_request=counter)
    deps = replace(runtime.deps(), registry_for=lambda _host: registry)
    out: list[Cycle] = []

    async def cycle(name: str) -> None:
        before = counter.count
        result = await reconcile(apps, deps)
        out.append(Cycle(name, counter.count - before, result))
        if result.failures:
            raise SystemExit(f"{name}: {result.failures[0].message}")

    try:
        for n in range(2):
            await cycle(f"steady {n + 1}")
        assert callable(sign_moved)
        await asyncio.to_thread(sign_moved)
        await cycle(f"{moved} dev tags moved (signed)")
        await cycle("steady again")
    finally:
        await registry.aclose()
        await runtime.aclose()
    return out


def run(apps: int, keep: bool) -> list[Cycle]:
    work = common.workdir(keep)
    try:
        with RegistryServer() as server:
            image = common.small_image()
            digests = common.seed_registry(server, image, apps)
            deploy = common.make_deploy_repo(work, apps, digests)
            folder = common.write_policies(work / "policies", server.host, deploy, apps)
            key = make_key_pair(work / "keys", name="ci")
            gate_policies(folder, key.public_path)
            loaded = load_policies([folder])
            moved = max(1, round(apps * MOVED_SHARE))

            def sign_moved() -> None:
                new = common.move_tags(server, image, [(i, "dev") for i in range(moved)])
                for (i, _env), digest in new.items():
                    sign_image(server.url, common.repository(i), digest, key)

            return asyncio.run(_cycles(loaded, server, work, moved, sign_moved))
    finally:
        common.remove(work, keep)


def render(cycles: Sequence[Cycle], tags: int) -> str:
    rows = [["cycle", "requests", "per tracked tag", "changes", "signature checks"]]
    for c in cycles:
        rows.append([c.name, str(c.requests), f"{c.requests / tags:.3f}",
                     str(len(c.result.changes)), str(len(c.result.signatures))])
    moved = next(c for c in cycles if "moved" in c.name)
    new = len(moved.result.changes) or 1
    extra = moved.requests - tags
    gate = sum(s.requests for s in moved.result.signatures)
    rows += [["extra requests per new digest", str(extra / new), "", "", ""],
             ["  of which the signature gate", str(gate / new), "", "", ""]]
    steady = [c for c in cycles if c.name.startswith("steady")]
    ok = all(c.requests == tags * TARGET_REQUESTS_PER_TAG for c in steady)
    return (common.table(rows) + f"\nsteady state {TARGET_REQUESTS_PER_TAG} request per "
            f"tracked tag with every environment gated: {'PASS' if ok else 'FAIL'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=50, help="apps, 3 env tags each")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    cycles = run(args.apps, args.keep)
    text = render(cycles, args.apps * len(common.ENVS))
    print(text)
    return 0 if text.endswith("PASS") else 1


if __name__ == "__main__":
    sys.exit(main())

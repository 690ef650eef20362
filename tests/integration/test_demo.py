"""``scripts/demo.py``, the README's one-command demo, run as a user runs it.

The demo starts its own real components (docker-registry, a bare repository, the forge
stand-in, ``image-updater run``), so this test runs it once and reads what it printed: each
step the README promises must be seen, and it must leave nothing behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # the demo runs once

ROOT = Path(__file__).parents[2]
APP = "application-x"


@pytest.fixture(scope="module")
def output() -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text


def _step(output: str, title: str) -> str:
    """What the demo printed under the step whose ``==>`` line contains ``title``."""
    start = output.index(title)
    end = output.find("\n==> ", start)
    return output[start:end if end >= 0 else None]


def test_the_demo_finishes_and_removes_its_work_dir(output: str) -> None:
    assert output.rstrip().endswith("==> demo finished")
    work = re.search(r"==> working in (\S+)", output)
    assert work is not None and not Path(work[1]).exists()
    assert "exit code 0" in _step(output, "the daemon stops on SIGTERM")


def test_ci_signs_and_staging_refuses_an_unsigned_push(output: str) -> None:
    assert "$ cosign sign --key cosign.key" in _step(output, "(build 1) and signs it")
    step = _step(output, "UNSIGNED build straight to")
    assert f"FAILED {APP}/staging: {APP}/staging requires a cosign signature" in step
    assert "(unsigned)" in step and "Nothing was written for staging" in step
    counts = re.search(r"exit code (\d+); master still has (\d+) commits \(was (\d+)\)", step)
    assert counts is not None, step
    assert counts[1] == "7" and counts[2] == counts[3]


def test_postsync_jobs_promote_through_the_api_with_only_a_token_file(output: str) -> None:
    step = _step(output, "dev's PostSync job promotes the TESTED digest")
    command = re.search(r"\$ image-updater promote application-x --from dev --to staging "
                        r"--digest (sha256:[0-9a-f]{64}) --server http://127\.0\.0\.1:\d+ "
                        r"--token-file api-tokens/postsync", step)
    assert command is not None, step
    tested = command[1]
    assert f":staging: {tested} (was sha256:" in step
    # the daemon's commit: staging holds the tested digest, with the job's evidence
    commit = _step(output, "the daemon committed staging at once")
    assert f'+  digest: "{tested}"' in commit
    for trailer in ("job=application-x-promote-to-staging", "promoted-by=api-token/postsync",
                    "argocd/sync-revision="):
        assert f"Image-Updater-Evidence: {trailer}" in commit
    pull_request = _step(output, "prod needs approval")
    assert "Image-Updater-Evidence: job=application-x-promote-to-prod" in pull_request


def test_the_story_ends_with_prod_approved_status_and_history(output: str) -> None:
    assert "pull request #1 approved and merged into master" in output
    status = _step(output, "the status page: open http://127.0.0.1:")
    assert '"app": "application-x"' in status
    assert '{"env":"prod","state":"in-sync","how":"PR merged by Release Manager"}' in status
    assert "no changes (3 environments up to date)" in _step(output, "does nothing for it")
    table = _step(output, "what runs where")
    assert all(f"{APP}/{env}" in table and "in-sync" in table
               for env in ("dev", "staging", "prod"))
    history = _step(output, "what ran: every change")
    assert len(re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d (dev|staging|prod) ", history,
                          re.M)) == 5

"""A real Prometheus scrapes the daemon while it reconciles; PromQL sees what git holds.

The chain under test: reconcile → metrics registry → /metrics → Prometheus scrape → PromQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.daemon import InProcessDaemon, daemon_settings, write_policy
from tests.fixtures.gitrepo import make_bare_repo
from tests.fixtures.prometheus import PrometheusServer, Vector, values
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

APP = "application-x"
UPDATES = f'image_updater_updates_total{{app="{APP}",env="dev",mode="commit"}}'
DEPLOYED = f'image_updater_deployed_image_info{{app="{APP}",env="dev"}}'


def digests(vector: Vector) -> list[str]:
    return [sample["metric"]["digest"] for sample in vector]


def test_promql_sees_update_counts_and_the_digest_each_env_runs(
        registry: RegistryServer, tmp_path: Path) -> None:
    deploy = make_bare_repo(tmp_path)
    repository = "prom/application-x"
    first = push_image(registry.url, repository, "dev", seed="prom-1")
    policies = tmp_path / "policies"
    write_policy(policies, APP, f"{registry.host}/{repository}", f"file://{deploy.path}")

    with InProcessDaemon(daemon_settings(tmp_path, registry.host), [policies]) as running:
        running.wait_cycles(1)
        with PrometheusServer(targets=[running.server.address]) as prom:
            prom.wait_for('up{job="image-updater"}', lambda v: values(v) == [1.0])
            prom.wait_for(UPDATES, lambda v: values(v) == [1.0])
            prom.wait_for(DEPLOYED, lambda v: digests(v) == [first] and values(v) == [1.0])

            # a second digest, reconciled while Prometheus keeps scraping
            second = push_image(registry.url, repository, "dev", seed="prom-2")
            running.call(running.daemon.request_full)
            running.wait_cycles(2)
            prom.wait_for(UPDATES, lambda v: values(v) == [2.0])
            # exactly one info series per app/env: the old digest's series went stale
            prom.wait_for(DEPLOYED, lambda v: digests(v) == [second])
            prom.wait_for("image_updater_cycle_duration_seconds_count",
                          lambda v: values(v) == [2.0])
            prom.wait_for("image_updater_images_watched", lambda v: values(v) == [1.0])
            # the alert ImageUpdaterNoSuccessfulCycle (deploy/monitoring/rules.yaml) stays quiet
            assert prom.query("time() - image_updater_last_successful_cycle_timestamp_seconds"
                              " > 3 * 120 or absent("
                              "image_updater_last_successful_cycle_timestamp_seconds)") == []
    assert f"digest: {second}" in deploy.show("master", "application-x/values-dev.yaml").decode()

"""The deploy kit renders, validates and agrees with the code it deploys.

Real tools: ``kubectl kustomize`` renders, ``kubernetes-validate`` checks core objects against
the Kubernetes schemas offline, ``promtool`` checks and unit-tests the alert rules. The CRDs
(ServiceMonitor, PrometheusRule) have no bundled schema, so their required fields are checked
by hand. Every metric name in the rules and the dashboard must be one Metrics() exposes.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from image_updater.observability.metrics import Metrics
from tests.fixtures.tools import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = ["base", "monitoring", "overlays/example"]
EXAMPLES = ["examples/secrets.yaml", "examples/postsync-promote-job.yaml"]
CRD_GROUP = "monitoring.coreos.com/"
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook_url"}


def _tool(name: str) -> str:
    return require_tool(name)


def _load_all(text: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(text) if d]


@cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(DEPLOY / kustomization)],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"kubectl kustomize deploy/{kustomization} failed:\n{out.stderr}"
    return tuple(_load_all(out.stdout))


def _example(path: str) -> list[dict[str, Any]]:
    return _load_all((DEPLOY / path).read_text())


def _one(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _all_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for k in KUSTOMIZATIONS:
        for obj in render(k):
            yield f"{k}:{obj['kind']}/{obj['metadata']['name']}", obj
    for path in EXAMPLES:
        for obj in _example(path):
            yield f"{path}:{obj['kind']}/{obj['metadata']['name']}", obj


# --- rendering and schemas ---------------------------------------------------------------

@pytest.mark.parametrize(("kustomization", "kinds"), [
    ("base", {"ServiceAccount", "Service", "Deployment", "ConfigMap"}),
    ("monitoring", {"ServiceMonitor", "PrometheusRule"}),
    ("overlays/example", {"ServiceAccount", "Service", "Deployment", "ConfigMap",
                          "ServiceMonitor", "PrometheusRule"}),
])
def test_kustomization_renders(kustomization: str, kinds: set[str]) -> None:
    objects = render(kustomization)
    assert {o["kind"] for o in objects} == kinds


def test_no_secret_values_are_rendered() -> None:
    """Secrets are prerequisites; the kit only references them by name."""
    for k in KUSTOMIZATIONS:
        assert all(o["kind"] != "Secret" for o in render(k)), k


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_against_kubernetes_schemas(version: str) -> None:
    checked = 0
    for where, obj in _all_objects():
        if obj["apiVersion"].startswith(CRD_GROUP):
            continue  # no bundled schema; see test_servicemonitor_* and test_prometheusrule_*
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {exc.message} "
                        f"at {'/'.join(map(str, exc.path))}")
        checked += 1
    assert checked >= 10


def test_overlay_puts_everything_in_its_namespace() -> None:
    assert {o["metadata"].get("namespace") for o in render("overlays/example")} == {
        "image-updater"}


def test_deployment_mounts_the_generated_configmaps() -> None:
    for k in ("base", "overlays/example"):
        objects = render(k)
        maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
        volumes = _one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
        # optional ConfigMaps (public keys, the issuer's JWKS) are the operator's, not generated
        used = {v["configMap"]["name"] for v in volumes
                if "configMap" in v and not v["configMap"].get("optional")}
        assert used == maps and len(used) == 2, k


# --- the Deployment ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    return _one(render("overlays/example"), "Deployment")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def test_probes_point_at_healthz_and_readyz(container: dict[str, Any]) -> None:
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_security_context_is_restricted(pod: dict[str, Any], container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65532  # the Dockerfile's USER
    assert pod["automountServiceAccountToken"] is False


def test_resources_have_requests_and_limits(container: dict[str, Any]) -> None:
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][section])


def test_writable_paths_are_emptydir_volumes(pod: dict[str, Any],
                                             container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in ("/var/cache/image-updater", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], path


def test_configuration_and_secret_mounts_are_read_only(pod: dict[str, Any],
                                                      container: dict[str, Any]) -> None:
    # a merge once dropped readOnly (and optional) from the public keys' mount
    given = {v["name"] for v in pod["volumes"] if "configMap" in v or "secret" in v}
    mounts = [m for m in container["volumeMounts"] if m["name"] in given]
    assert {m["name"] for m in mounts} == given
    assert [m["name"] for m in mounts if m.get("readOnly") is not True] == []


def test_secrets_are_referenced_by_name(pod: dict[str, Any]) -> None:
    names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert names == {"image-updater-git", "image-updater-forge", "image-updater-registry",
                     "image-updater-signing"}
    example = {s["metadata"]["name"] for s in _example("examples/secrets.yaml")}
    assert example == names  # the documented prerequisites are exactly what is mounted


def test_service_exposes_port_8080_named_http() -> None:
    service = _one(render("base"), "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]


def test_service_account_is_used() -> None:
    objects = render("base")
    name = _one(objects, "ServiceAccount")["metadata"]["name"]
    assert _one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == name


def _cli_parser() -> Any:
    cli = pytest.importorskip("image_updater.cli")
    return cli.build_parser()


def test_container_args_parse_with_the_cli(container: dict[str, Any]) -> None:
    args = _cli_parser().parse_args(container["args"])
    assert args.command == "run"
    assert args.config == "/etc/image-updater/config.yaml"
    assert args.policies == ["/etc/image-updater/policies"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {args.config, *args.policies} <= mounts


def test_shipped_config_and_policies_load() -> None:
    settings = pytest.importorskip("image_updater.config.settings")
    policies = pytest.importorskip("image_updater.config.policies")
    loaded = settings.load_settings(DEPLOY / "base/config/config.yaml", environ={})
    assert loaded.interval == 120  # the NoSuccessfulCycle alert's 3 * 120 assumes it
    assert loaded.listen.endswith(":8080")
    for folder in ("base/config/policies", "overlays/example/policies"):
        assert policies.load_policies([DEPLOY / folder]), folder


# --- the Argo CD PostSync example ---------------------------------------------------------

def test_postsync_job_promotes_after_smoke_tests() -> None:
    (job,) = _example("examples/postsync-promote-job.yaml")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PostSync"
    assert set(annotations["argocd.argoproj.io/hook-delete-policy"].split(",")) == {
        "BeforeHookCreation", "HookSucceeded"}
    spec = job["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["smoke-tests"]
    args = _cli_parser().parse_args(spec["containers"][0]["args"])
    assert (args.command, args.app, args.source, args.target) == (
        "promote", "application-x", "dev", "staging")
    assert not args.from_git, "a job promotes the digest it tested, never git's head"
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["IMAGE_UPDATER_DIGEST"].startswith("sha256:")
    # the daemon promotes: the job holds a projected token, no git or registry secret
    assert args.server and args.service_account_token
    assert not any("secret" in volume for volume in spec["volumes"])
    (source,) = spec["volumes"][0]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "image-updater"


# --- monitoring ---------------------------------------------------------------------------

def test_servicemonitor_scrapes_the_service_metrics_port() -> None:
    objects = render("overlays/example")
    monitor = _one(objects, "ServiceMonitor")
    service = _one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def _rules_file() -> dict[str, Any]:
    return YAML(typ="safe").load((DEPLOY / "monitoring/rules.yaml").read_text())


def test_prometheusrule_embeds_exactly_rules_yaml() -> None:
    rule = _one(render("monitoring"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _rules_file()["groups"]


def test_prometheusrule_has_required_fields() -> None:
    groups = _one(render("monitoring"), "PrometheusRule")["spec"]["groups"]
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert rule["expr"].strip()
            assert ("alert" in rule) != ("record" in rule)


def _alerts() -> list[dict[str, Any]]:
    return [r for g in _rules_file()["groups"] for r in g["rules"] if "alert" in r]


def test_expected_alerts_exist() -> None:
    assert {a["alert"] for a in _alerts()} == {
        "ImageUpdaterNoSuccessfulCycle", "ImageUpdaterGitPushFailing",
        "ImageUpdaterRegistryErrorRate", "ImageUpdaterPullRequestOpenTooLong",
        "ImageUpdaterEnvironmentHeldTooLong"}


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for alert in _alerts():
        assert alert["annotations"].keys() >= REQUIRED_ANNOTATIONS, alert["alert"]
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        anchor = alert["annotations"]["runbook_url"].rpartition("#")[2]
        assert anchor == alert["alert"].lower() and anchor in anchors


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("promtool"), *args], cwd=DEPLOY / "monitoring",
                          capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules_passes() -> None:
    out = _promtool("check", "rules", "rules.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in out.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    """rules_test.yaml shows each alert firing on a broken series and quiet on a healthy one."""
    out = _promtool("test", "rules", "rules_test.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


# --- metric names -------------------------------------------------------------------------

PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, Grafana variables in them
    expr = re.sub(r"\{[^}]*\}", "", expr)             # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)            # range selectors, $__rate_interval
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        followed_by_call = expr[match.end():].lstrip().startswith("(")
        if not followed_by_call and match[0].lower() not in PROMQL_KEYWORDS:
            names.add(match[0])
    return names


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (registry) (rate(x_total{status!~"2.."}[5m])) / sum(rate(x_total[5m]))',
     {"x_total"}),
    ("time() - a > 3 * 120 or absent(a)", {"a"}),
    ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
    ("up == 1 and on (job) b", {"up", "b"}),
])
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def exposed_metric_names() -> set[str]:
    """Every sample name Metrics() can expose, with the suffixes prometheus-client adds."""
    suffixes = {"counter": ("_total", "_created"),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",)}
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana/image-updater-dashboard.json").read_text())


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"] for t in p["targets"]]


def test_rules_use_only_exposed_metrics() -> None:
    exposed = exposed_metric_names()
    for group in _rules_file()["groups"]:
        for rule in group["rules"]:
            used = metric_names(rule["expr"])
            assert used, rule["expr"]
            assert used <= exposed, f"{rule.get('alert')}: unknown {sorted(used - exposed)}"


def test_dashboard_uses_only_exposed_metrics() -> None:
    exposed = exposed_metric_names()
    for title, expr in _dashboard_exprs():
        used = metric_names(expr)
        assert used, f"panel {title!r}: no metric in {expr!r}"
        assert used <= exposed, f"panel {title!r}: unknown {sorted(used - exposed)}"


def test_dashboard_has_the_promised_panels() -> None:
    exprs = dict(_dashboard_exprs())
    by_metric = {title: metric_names(e) for title, e in _dashboard_exprs()}
    assert "image_updater_deployed_image_info" in by_metric["What runs where"]
    assert "image_updater_updates_total" in by_metric["Updates over time"]
    cycle = [e for t, e in _dashboard_exprs() if t == "Cycle duration"]
    assert any("histogram_quantile(0.5," in e for e in cycle)
    assert any("histogram_quantile(0.95," in e for e in cycle)
    assert "by (registry, status)" in exprs["Registry requests"]
    assert "image_updater_git_pushes_total" in by_metric["Git push results"]
    assert "image_updater_pull_requests_open" in by_metric["Open pull requests"]


def test_dashboard_is_importable_shape() -> None:
    dash = _dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()

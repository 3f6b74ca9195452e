"""The Kubernetes manifests (deploy/kubernetes), checked without a cluster.

`kubectl kustomize` renders the base as `kubectl apply -k` would; every rendered resource is
validated against the Kubernetes JSON schemas that the kubernetes-validate package ships (no
network), strictly, so a misspelt field fails too; then the properties a deploy relies on are
asserted: the autoscaler owns the replica count, the probes hit the right paths, the pod runs
locked down, shutdown outlasts the server's graceful timeout, secrets come only from the
Secret created by hand, and the selectors and ports line up. Without kubectl (Debian's package
is `kubernetes-client`; .ci/run installs it) the tests that need a rendering are skipped,
saying so; the manifests are still validated file by file.
"""

import ipaddress
import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from blogapi.config import Settings
from blogapi.server import GRACEFUL_SHUTDOWN_SECONDS

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "kubernetes.md"

# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.latest_version()]

SECRET_NAME = "blogapi"
SECRET_KEYS = {
    "SECRET_KEY": "secret-key",
    "DATABASE_URL": "database-url",
    "REDIS_URL": "redis-url",
    "METRICS_TOKEN": "metrics-token",
}

Resource = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip(
            "kubectl is not installed, so the manifests can't be rendered: "
            "apt-get install kubernetes-client (.ci/run does)"
        )
    return found


def render(directory: Path) -> list[Resource]:
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return [resource for resource in yaml.safe_load_all(rendered.stdout) if resource]


def one(resources: list[Resource], kind: str) -> Resource:
    (found,) = [resource for resource in resources if resource["kind"] == kind]
    return found


def validate(resource: Resource, version: str) -> None:
    """Strict: a field the schema doesn't know fails. A kind or apiVersion with no schema
    fails as well (kubernetes-validate's own command line only warns)."""
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(step) for step in error.path)
        pytest.fail(
            f"{resource['kind']} {path}: {error.message} (Kubernetes {version})"
        )
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(error.message)


@pytest.fixture(scope="module")
def resources() -> list[Resource]:
    return render(BASE)


@pytest.fixture(scope="module")
def deployment(resources: list[Resource]) -> Resource:
    return one(resources, "Deployment")


@pytest.fixture(scope="module")
def pod(deployment: Resource) -> Resource:
    spec: Resource = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Resource) -> Resource:
    (only,) = pod["containers"]
    return only


def pod_labels(deployment: Resource) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_resource_validates(
    resources: list[Resource], version: str
) -> None:
    for resource in resources:
        validate(resource, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_file_validates_without_kubectl(version: str) -> None:
    files = sorted(BASE.glob("*.yaml"))
    assert BASE / "kustomization.yaml" in files
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for resource in yaml.safe_load_all(path.read_text()):
            validate(resource, version)


def test_the_base_is_these_resources_and_no_secret_or_job(
    resources: list[Resource],
) -> None:
    kinds = sorted(resource["kind"] for resource in resources)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "PodDisruptionBudget",
            "Service",
        ]
    )


def test_the_autoscaler_owns_the_replica_count(
    resources: list[Resource], deployment: Resource
) -> None:
    assert "replicas" not in deployment["spec"]
    autoscaler = one(resources, "HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_resources_are_requested_and_limited(container: Resource) -> None:
    # CPU utilization is measured against the request: without one the autoscaler can't act.
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][bound].keys(), bound


def test_the_image_is_a_placeholder_for_kustomize_images(container: Resource) -> None:
    assert container["image"] == "blogapi:latest"


def test_probes_hit_the_health_endpoints_with_room_under_load(
    container: Resource,
) -> None:
    (port,) = container["ports"]
    paths = {
        "startupProbe": "/health",
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health",
    }
    for probe_name, path in paths.items():
        probe = container[probe_name]
        assert probe["httpGet"]["path"] == path, probe_name
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])
        assert probe["timeoutSeconds"] >= 5, probe_name
    # A restart only after a minute without an answer, and the migrations (or the wait
    # for another pod's, under the lock) get minutes before the start-up probe gives up.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_the_container_runs_locked_down(pod: Resource, container: Resource) -> None:
    pod_context = pod["securityContext"]
    context = container["securityContext"]

    def effective(field: str) -> Any:
        return context.get(field, pod_context.get(field))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") not in (None, 0)
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert pod["automountServiceAccountToken"] is False


def test_tmp_is_the_one_writable_place(pod: Resource, container: Resource) -> None:
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert not mount.get("readOnly", False)
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    env = {item["name"]: item for item in container["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/")


def test_shutdown_outlasts_the_prestop_sleep_and_the_graceful_timeout(
    pod: Resource, container: Resource
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = int(command[1])
    assert sleep >= 5
    assert pod["terminationGracePeriodSeconds"] > sleep + GRACEFUL_SHUTDOWN_SECONDS


def test_secrets_come_only_from_the_secret_created_by_hand(
    resources: list[Resource], container: Resource
) -> None:
    assert not [r for r in resources if r["kind"] == "Secret"]
    references = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert {name: ref["key"] for name, ref in references.items()} == SECRET_KEYS
    for name, reference in references.items():
        assert reference["name"] == SECRET_NAME, name
        assert not reference.get("optional", False), name
    assert not [
        source for source in container.get("envFrom", []) if "secretRef" in source
    ]
    config = one(resources, "ConfigMap")["data"]
    assert not SECRET_KEYS.keys() & config.keys()


def test_settings_come_from_the_configmap_and_are_valid(
    resources: list[Resource], container: Resource
) -> None:
    config_map = one(resources, "ConfigMap")
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
    config: dict[str, str] = config_map["data"]

    fields = {name.upper() for name in Settings.model_fields}
    assert config.keys() <= fields, "unknown setting in the ConfigMap"
    settings = Settings(
        _env_file=None,
        **{name.lower(): value for name, value in config.items() if name in fields},
    )
    # Set, not left to the CPU count (the node's, not the pod's share).
    assert "WEB_CONCURRENCY" in config
    assert settings.web_concurrency <= settings.db_max_connections
    assert settings.log_format == "json"
    assert settings.db_prepared_statements is False


def test_forwarded_allow_ips_names_the_proxy_networks(
    resources: list[Resource],
) -> None:
    value = one(resources, "ConfigMap")["data"]["FORWARDED_ALLOW_IPS"]
    entries = [entry.strip() for entry in value.split(",")]
    assert "*" not in entries
    for entry in entries:
        ipaddress.ip_network(entry)


def test_the_disruption_budget_covers_the_pods_and_lets_a_drain_through(
    resources: list[Resource], deployment: Resource
) -> None:
    budget = one(resources, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    selector = budget["spec"]["selector"]
    assert selects(selector["matchLabels"], pod_labels(deployment))
    assert selector == deployment["spec"]["selector"]
    minimum = one(resources, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    if "maxUnavailable" in budget["spec"]:
        assert budget["spec"]["maxUnavailable"] == 1
    else:
        assert 1 <= budget["spec"]["minAvailable"] < minimum


def test_the_service_selects_the_pods_and_their_port(
    resources: list[Resource], deployment: Resource, container: Resource
) -> None:
    service = one(resources, "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    (port,) = service["spec"]["ports"]
    (container_port,) = container["ports"]
    assert port["targetPort"] in (
        container_port["name"],
        container_port["containerPort"],
    )


def test_the_ingress_routes_to_the_service_port(resources: list[Resource]) -> None:
    ingress = one(resources, "Ingress")
    service = one(resources, "Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    service_ports = [
        *(
            {"name": port["name"]}
            for port in service["spec"]["ports"]
            if "name" in port
        ),
        *({"number": port["port"]} for port in service["spec"]["ports"]),
    ]
    hosts = set()
    for rule in ingress["spec"]["rules"]:
        hosts.add(rule["host"])
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"] in service_ports
    tls_hosts = {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    assert hosts == tls_hosts


def docs_yaml() -> list[str]:
    """The YAML blocks docs/kubernetes.md shows, as its reader would save them."""
    fenced = re.compile(r"^ *```yaml\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for block in fenced.findall(DOCS.read_text())]


def docs_overlay() -> str:
    (overlay,) = [
        b for b in docs_yaml() if b.startswith("# deploy/overlays/production/")
    ]
    return overlay


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_resources_in_the_docs_validate(version: str) -> None:
    shown = [yaml.safe_load(block) for block in docs_yaml()]
    resources = [r for r in shown if r["kind"] != "Kustomization"]
    assert [r["kind"] for r in resources] == ["NetworkPolicy"]
    for resource in resources:
        validate(resource, version)


def test_the_overlay_in_the_docs_sets_image_host_and_settings(tmp_path: Path) -> None:
    version = subprocess.run(
        [kubectl(), "version", "--client", "--output=json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    minor = json.loads(version.stdout)["clientVersion"]["minor"]
    if int(re.sub(r"\D", "", minor)) < 21:
        pytest.skip(
            f"kubectl 1.{minor} embeds kustomize 2, which lacks the overlay's `patches`; "
            "kubectl 1.21 or newer renders it"
        )
    base = tmp_path / "deploy" / "kubernetes"
    shutil.copytree(BASE, base)
    overlay = tmp_path / "deploy" / "overlays" / "production"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(docs_overlay())

    resources = render(overlay)
    for resource in resources:
        validate(resource, KUBERNETES_VERSIONS[-1])
    base_resources = render(base)
    assert sorted(r["kind"] for r in resources) == sorted(
        r["kind"] for r in base_resources
    )
    assert {r["metadata"].get("namespace") for r in resources} == {"blogapi"}
    (container,) = one(resources, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == "registry.example.com/blogapi:1.4.0"
    ingress = one(resources, "Ingress")
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["blog.example.org"]
    assert ingress["spec"]["tls"][0]["hosts"] == ["blog.example.org"]
    config = one(resources, "ConfigMap")["data"]
    assert config["PUBLIC_URL"] == "https://blog.example.org"
    # Merged: the base's other settings stay.
    assert config.keys() == one(base_resources, "ConfigMap")["data"].keys()
    assert (
        (container["envFrom"][0]["configMapRef"]["name"])
        == (one(resources, "ConfigMap")["metadata"]["name"])
    )

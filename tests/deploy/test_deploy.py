"""deploy/ and docker-compose.yml checked by the tools that run them: promtool,
docker-compose and the Kubernetes schemas. `make tools` installs the Debian packages."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import yaml
from kubernetes_validate import validate
from prometheus_client import REGISTRY, generate_latest

import streams.deliver.metrics
import streams.services.api
import streams.services.collector
import streams.trainer.metrics
import streams.worker.metrics
from streams.tools.embedded import apache_kafka

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `make tools` installs it"
    return found


def run(*command: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_prometheus_config_and_alert_rules_pass_promtool():
    prometheus = DEPLOY / "prometheus"
    run(tool("promtool"), "check", "config", "prometheus.yml", cwd=prometheus)
    out = run(tool("promtool"), "check", "rules", "alerts.yml", cwd=prometheus)
    assert "SUCCESS: 7 rules found" in out
    assert "SUCCESS" in run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=prometheus)


def test_docker_compose_runs_the_whole_stack():
    run(tool("docker-compose"), "config", "-q")
    config = yaml.safe_load(run(tool("docker-compose"), "config"))
    services = config["services"]
    assert set(services) == {
        "kafka",
        "redis",
        "worker",
        "trainer",
        "collector",
        "api",
        "deliver",
        "prometheus",
        "grafana",
    }
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert services["kafka"]["image"] == f"apache/kafka:{apache_kafka.VERSION}"
    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in scraped["scrape_configs"]
    }
    ports = {
        "worker": services["worker"]["environment"]["SEGSTREAM_METRICS_PORT"],
        "trainer": services["trainer"]["environment"]["SEGSTREAM_TRAINER_WEB_PORT"],
        "collector": services["collector"]["environment"]["SEGSTREAM_COLLECTOR_PORT"],
        "api": services["api"]["environment"]["SEGSTREAM_API_PORT"],
        "deliver": services["deliver"]["environment"]["SEGSTREAM_METRICS_PORT"],
    }
    assert targets == {f"segstream-{name}": f"{name}:{port}" for name, port in ports.items()}
    mounts = " ".join(services["grafana"]["volumes"] + services["prometheus"]["volumes"])
    for path in ("grafana/provisioning", "grafana/dashboards", "alerts.yml"):
        assert path in mounts


def test_the_embedded_broker_compose_kubernetes_and_the_makefile_name_one_kafka():
    version = apache_kafka.VERSION
    assert f"KAFKA_VERSION := {version}\n" in (ROOT / "Makefile").read_text()
    assert f"<kafka.version>{version}</kafka.version>" in (DEPLOY / "kafka" / "pom.xml").read_text()
    assert f"Apache Kafka {version} (KRaft)" in (DEPLOY / "kubernetes" / "config.yaml").read_text()
    assert f"image: apache/kafka:{version}\n" in (ROOT / "docker-compose.yml").read_text()


def test_kubernetes_manifests_are_valid_and_every_process_has_probes():
    deployments = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for resource in yaml.safe_load_all(path.read_text()):
            validate(resource, "1.31.0", strict=True)
            if resource["kind"] == "Deployment":
                deployments[resource["metadata"]["name"]] = resource
    assert set(deployments) == {
        f"segstream-{name}" for name in ("worker", "trainer", "collector", "api", "deliver")
    }
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [name.removeprefix("segstream-")]
        ports = {port["name"] for port in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)


def declared_metrics() -> set[str]:
    """Every sample name segstream's processes can expose."""
    names = set()
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_dashboard_and_alerts_only_use_metrics_segstream_exposes():
    dashboard = orjson.loads((DEPLOY / "grafana" / "dashboards" / "segstream.json").read_bytes())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in (
        "Throughput",
        "Consumer lag by partition",
        "Freshness (event time to Redis)",
        "Segment sizes",
        "Transitions per segment",
        "Model: inertia and drift",
        "Webhook deliveries",
        "Webhook backlog and requests in flight",
        "Webhook latency (processed to 2xx)",
    ):
        assert wanted in titles
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"segstream_[a-z0-9_]+", " ".join(expressions) + rules))
    unknown = used - declared_metrics()
    assert not unknown, unknown
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "segstream.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_metric_names_follow_prometheus_rules():
    """Every process's metrics (worker, trainer, collector, API, deliverer) as promtool lints
    them."""
    loaded = (
        streams.deliver.metrics,
        streams.worker.metrics,
        streams.trainer.metrics,
        streams.services.collector,
        streams.services.api,
    )
    assert all(loaded)
    exposition = generate_latest(REGISTRY)
    assert b"segstream_trainer_inertia" in exposition
    done = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == b""

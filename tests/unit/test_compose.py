"""docker-compose.yml cannot run here (no Docker engine): check its structure instead."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_compose_has_the_production_stack_with_pinned_images_and_healthchecks():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    for name in ("kafka", "postgres", "migrate", "attribution", "ledger", "alerts"):
        assert name in services, name
    for name, svc in services.items():
        image = svc.get("image")
        if image:
            assert ":" in image and not image.endswith(":latest"), f"{name} image is not pinned"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    for name in ("kafka", "postgres"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["inferledger", "migrate"]
    for name in ("attribution", "ledger", "alerts"):
        svc = services[name]
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
        env = svc["environment"]
        assert env["INFERLEDGER_KAFKA_BOOTSTRAP"] and env["INFERLEDGER_DATABASE_URL"]
        assert svc["command"][:2] == ["inferledger", "run"]
        assert env["INFERLEDGER_METRICS_LISTEN"]  # /healthz: 503 while a dependency fails
        assert "/healthz" in " ".join(svc["healthcheck"]["test"])


def test_migrations_run_as_the_owner_and_the_processors_as_a_writer_login():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    assert owner == "postgres"
    assert f"-U {owner}" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("migrate", "writer-login"):
        svc = services[name]
        assert urlsplit(svc["environment"]["INFERLEDGER_DATABASE_URL"]).username == owner, name
        assert svc["restart"] == "no"
    login = services["writer-login"]
    command = login["command"]
    assert command[:3] == ["inferledger", "roles", "grant-writer"]
    writer = command[3]
    # the password from the environment, never on the command line
    assert command[4:] == ["--password-env", "INFERLEDGER_WRITER_PASSWORD"]
    assert login["environment"]["INFERLEDGER_WRITER_PASSWORD"]
    assert login["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("attribution", "ledger", "alerts"):
        svc = services[name]
        url = urlsplit(svc["environment"]["INFERLEDGER_DATABASE_URL"])
        assert url.username == writer and writer != owner, name
        assert svc["depends_on"]["writer-login"]["condition"] == "service_completed_successfully"


ROOT = COMPOSE.parent


def _listen_port(svc: dict) -> int:
    """The port a service serves /metrics on: INFERLEDGER_METRICS_LISTEN, or --listen."""
    listen = svc.get("environment", {}).get("INFERLEDGER_METRICS_LISTEN")
    if listen is None:
        cmd = svc["command"]
        listen = cmd[cmd.index("--listen") + 1]
    return int(listen.rpartition(":")[2])


def _scrape_targets() -> dict[str, set[tuple[str, int]]]:
    """job -> {(host, port)} of deploy/prometheus/prometheus.yml."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs: dict[str, set[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], set())
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A"  # every replica of a scaled service
            targets.update((name, int(dns["port"])) for name in dns["names"])
    return jobs


def _mounts(svc: dict) -> dict[str, str]:
    """container path -> host path (relative to the repository) of a service's bind mounts."""
    out = {}
    for volume in svc.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("./"):
            out[container] = host[2:]
    return out


def test_prometheus_scrapes_every_processor_the_gateway_and_the_proxy_on_their_ports():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == "deploy/prometheus/prometheus.yml"
    assert (ROOT / mounts["/etc/prometheus/prometheus.yml"]).is_file()
    jobs = _scrape_targets()
    for name in ("attribution", "ledger", "alerts", "gateway", "proxy"):
        assert jobs.get(name) == {(name, _listen_port(services[name]))}, name
    assert services["gateway"]["command"][:2] == ["inferledger", "gateway"]
    assert services["proxy"]["command"][:2] == ["inferledger", "proxy"]
    for name in ("gateway", "proxy"):  # /healthz on the port Prometheus scrapes
        port = _listen_port(services[name])
        assert f"127.0.0.1:{port}/healthz" in " ".join(services[name]["healthcheck"]["test"])


def test_grafana_is_provisioned_from_the_repository_and_reads_the_ledger_as_the_reader():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "deploy/grafana/provisioning"
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "inferledger.yml").read_text())
    (path,) = [p["options"]["path"] for p in providers["providers"]]
    assert mounts[path] == "deploy/grafana/dashboards"
    assert list((ROOT / mounts[path]).glob("*.json"))
    (datasources,) = (provisioning / "datasources").glob("*.yml")
    sources = {d["type"]: d for d in yaml.safe_load(datasources.read_text())["datasources"]}
    pg = sources["grafana-postgresql-datasource"]
    assert pg["user"] == "inferledger_grafana"  # a login of inferledger_reader, not the owner
    postgres_env = services["postgres"]["environment"]
    assert pg["user"] != postgres_env["POSTGRES_USER"]
    assert (
        pg["url"] == "postgres:5432" and pg["jsonData"]["database"] == postgres_env["POSTGRES_DB"]
    )
    password = pg["secureJsonData"]["password"]
    assert password.startswith("$") and password[1:] in grafana["environment"]
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    assert "prometheus" in grafana["depends_on"] and "postgres" in grafana["depends_on"]

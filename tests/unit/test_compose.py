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

"""Deployment files: compose.yaml publishes distinct host ports (Honeycomb
8780, the registry 5055), the local override never pulls, the Dockerfile
keeps its defaults, and docs/openapi.json is a valid OpenAPI 3.1 document."""

import json
import pathlib
import re

import yaml
from openapi_spec_validator import validate

ROOT = pathlib.Path(__file__).resolve().parents[4]


def expand(value: str) -> str:
    """${VAR:-default} → default (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def host_ports(service: dict) -> list[tuple[str, int]]:
    out = []
    for p in service.get("ports", []):
        parts = expand(str(p)).split(":")
        assert len(parts) == 3, f"ports must name the host address: {p}"
        ip, host, _container = parts
        out.append((ip, int(host)))
    return out


def test_compose_services_publish_distinct_loopback_ports():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "registry", "honeycomb"} <= set(services)
    seen = {}
    for name, service in services.items():
        for ip, port in host_ports(service):
            assert ip == "127.0.0.1", f"{name} publishes on {ip}, not loopback"
            assert port not in seen, f"{name} and {seen.get(port)} both publish {port}"
            seen[port] = name
    assert seen[8780] == "honeycomb"
    assert seen[5055] == "registry"
    env = services["honeycomb"]["environment"]
    assert env["HONEYCOMB_BACKEND"].startswith("postgres://")
    assert env["HONEYCOMB_REGISTRY"] == "registry:5000"


def test_the_local_override_never_pulls():
    local = yaml.safe_load((ROOT / "compose.local.yaml").read_text())
    assert local["services"]["honeycomb"]["pull_policy"] == "never"


def test_the_dockerfile_runs_as_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert "# syntax" not in text, "no BuildKit-only syntax"
    assert re.search(r"^FROM scratch$", text, re.M)
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user and int(user.group(1)) != 0
    assert 'HEALTHCHECK' in text and '"/honeycomb", "healthcheck"' in text
    assert "EXPOSE 8780" in text
    assert 'VOLUME ["/data"]' in text


def test_the_kept_openapi_document_is_valid_openapi_3_1():
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert doc["openapi"].startswith("3.1")
    validate(doc)

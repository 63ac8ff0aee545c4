"""docker compose cannot run here, so the compose file is checked against the repository:
every image is pinned or built from a Dockerfile whose sources exist, every Wattline
command exists in the CLI, every variable is documented, every mounted path exists."""

import re
import subprocess
import sys

import pytest
import yaml

from app import PROJECT_ROOT
from app.settings import Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = {
    line.split("=", 1)[0]
    for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
    if line and not line.startswith("#")
}
SETTINGS_VARS = {f"WATTLINE_{name.upper()}" for name in Settings.model_fields}
GRAFANA_VARS = set(re.findall(r"\$\{(WATTLINE_GRAFANA_DB_\w+)\}",
                              (PROJECT_ROOT / "grafana/provisioning/datasources/wattline.yaml").read_text()))


def test_expected_services_with_restart_policies_and_volumes():
    assert {"timescaledb", "mosquitto", "migrate", "api", "collectors", "jobs", "grafana", "simulator"} <= set(SERVICES)
    assert SERVICES["simulator"]["profiles"] == ["demo"]
    assert "timescale/timescaledb:" in SERVICES["timescaledb"]["image"]
    for name, svc in SERVICES.items():
        if name in ("migrate", "demo-load"):
            assert svc["restart"] == "no"
        else:
            assert svc.get("restart") == "unless-stopped", name
    for name in ("timescaledb", "mosquitto", "api", "collectors", "grafana"):
        assert "healthcheck" in SERVICES[name], name
    named = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_or_built_from_the_repository(name):
    svc = SERVICES[name]
    if "build" in svc:
        context = PROJECT_ROOT / svc["build"]
        dockerfile = context / "Dockerfile"
        assert dockerfile.exists()
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (context / src).exists(), f"Dockerfile copies missing {src}"
    else:
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image} is not pinned"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_paths_exist(name):
    for volume in SERVICES[name].get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith("."):
            assert (PROJECT_ROOT / source).exists(), f"{name}: {source} does not exist"


def _commands(svc) -> list[list[str]]:
    command = svc.get("command")
    if not command:
        return []
    if command[:2] == ["sh", "-c"]:
        return [part.split(">")[0].split() for part in command[2].split("&&")]
    return [command]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_wattline_commands_exist(name):
    for argv in _commands(SERVICES[name]):
        assert argv[0] == "wattline", f"{name}: {argv}"
        # the subcommand path (without option values) answers --help
        words = [w for w in argv[1:] if not w.startswith("-")][:2]
        res = subprocess.run([sys.executable, "-m", "app.cli", *words[:1], "--help"],
                             capture_output=True, text=True)
        assert res.returncode == 0, f"{name}: `wattline {words[0]}` is not a command:\n{res.stderr}"
        if len(words) > 1 and not words[1].isdigit() and "." not in words[1]:
            res2 = subprocess.run([sys.executable, "-m", "app.cli", *words, "--help"],
                                  capture_output=True, text=True)
            assert res2.returncode == 0, f"{name}: `wattline {' '.join(words)}` is not a command"
        options = [w.split("=")[0] for w in argv[1:] if w.startswith("--")]
        help_text = subprocess.run([sys.executable, "-m", "app.cli", *words, "--help"],
                                   capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}).stdout
        for option in options:
            assert option in help_text, f"{name}: `wattline {' '.join(words)}` has no option {option}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_environment_variables_are_known(name):
    env = SERVICES[name].get("environment", {})
    text = yaml.safe_dump(SERVICES[name])
    for var in env:
        if var.startswith("WATTLINE_GRAFANA_DB_"):
            assert var in GRAFANA_VARS or var == "WATTLINE_GRAFANA_DB_PASSWORD", var
        elif var.startswith("WATTLINE_"):
            assert var in SETTINGS_VARS, f"{name}: {var} is not a Wattline setting"
    for ref in re.findall(r"\$\{(\w+)", text):
        assert ref in ENV_EXAMPLE, f"{name}: ${{{ref}}} is not in .env.example"

"""The project's promises about itself: pinned installs, README commands, CI, compose parity."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from app.settings import Settings
from tests.services import ROOT


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_dependency_is_pinned_in_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = _pins()
    for spec in wanted:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{name} is not pinned in constraints.txt (run scripts/lock)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {spec}"


def test_known_version_pitfalls_are_avoided() -> None:
    pins = _pins()
    major = int(pins["xgboost"].split(".")[0])
    shap = tuple(int(p) for p in pins["shap"].split(".")[:2])
    assert major < 3 or shap >= (0, 50), "xgboost 3.x needs shap >= 0.50"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S)
    assert block, "README.md must open with a code block holding the two commands"
    commands = (ln.split("#", 1)[0].strip() for ln in block.group(1).splitlines())
    return [c for c in commands if c]


def test_readme_opens_with_demo_and_test_commands_and_ci_runs_the_test_one() -> None:
    demo, test = _readme_commands()[:2]
    assert "demo" in demo
    assert (ROOT / demo.split()[0]).exists()
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci, f".ci/run must call exactly the README test command {test!r}"


def test_compose_pins_images_and_uses_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)<", pom)
    assert kafka_version
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert not image or re.search(r":\d[\w.-]*$", image), f"{name}: image {image!r} is not pinned"
        assert "healthcheck" in service, f"{name} has no healthcheck"

    known = {f"FRAUDSTREAM_{field.upper()}" for field in Settings.model_fields}
    app_env = compose["x-app-env"]
    unknown = {k for k in app_env if k.startswith("FRAUDSTREAM_") and k not in known}
    assert not unknown, f"compose sets variables no setting reads: {unknown}"
    assert "FRAUDSTREAM_PG_PASSWORD" in app_env
    assert ":?" in app_env["FRAUDSTREAM_PG_PASSWORD"], "secrets must not have a default"


def test_services_state_is_git_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".services/" in ignored
    assert ".venv/" in ignored


def test_pyproject_packages_exist() -> None:
    for package in ("app", "features", "training", "expectations"):
        assert (ROOT / package / "__init__.py").exists()
    assert Path(ROOT / "app" / "cli.py").exists()

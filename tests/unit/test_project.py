"""The project's promises about itself: pinned installs, README commands, CI, compose parity."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

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


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_pins_images_and_uses_known_settings() -> None:
    compose = _compose()
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)<", pom)
    assert kafka_version
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    known = {f"FRAUDSTREAM_{field.upper()}" for field in Settings.model_fields} | {
        "FRAUDSTREAM_ADMIN_PASSWORD",  # read once by `fraudstream init` for the first admin
    }
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert re.search(r":(\d[\w.-]*|\$\{FRAUDSTREAM_VERSION:-\d[\w.-]*\})$", image), (
            f"{name}: {image!r} not pinned"
        )
        assert "healthcheck" in service, f"{name} has no healthcheck"
        env = service.get("environment", {})
        unknown = {k for k in env if k.startswith("FRAUDSTREAM_") and k not in known}
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
        for key, value in env.items():
            if "PASSWORD" in key:
                assert ":?" in value, f"{name}: secret {key} must not have a default"
    assert "FRAUDSTREAM_PG_PASSWORD" in compose["x-app-env"]


def test_compose_app_services_run_real_subcommands_after_their_dependencies() -> None:
    from typer.main import get_command  # noqa: PLC0415
    from typer.testing import CliRunner  # noqa: PLC0415

    from app.cli import cli  # noqa: PLC0415

    group = get_command(cli)
    app_services = {n: s for n, s in _compose()["services"].items() if "command" in s}
    assert set(app_services) == {"init", "worker", "ui", "trainer", "simulator"}
    for name, service in app_services.items():
        assert service["build"] == "."
        args = list(service["command"])
        ctx = group.make_context("fraudstream", args[:1])
        sub = group.get_command(ctx, args[0])  # type: ignore[attr-defined]
        assert sub is not None, f"{name}: fraudstream {args[0]} does not exist"
        sub.make_context(args[0], args[1:])  # unknown options or bad values raise here
        assert CliRunner().invoke(cli, [args[0], "--help"]).exit_code == 0, name
        needs = service["depends_on"]
        for dependency in ("kafka", "postgres"):
            assert needs[dependency]["condition"] == "service_healthy", name
        if name != "init":
            assert needs["init"]["condition"] == "service_completed_successfully", name
    assert _compose()["services"]["worker"]["deploy"]["replicas"] >= 2
    assert _compose()["services"]["ui"]["ports"] == ["8080:8080"]


def test_dockerfile_installs_the_lock_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.MULTILINE)
    assert "pip install --constraint constraints.txt ." in text
    assert "scripts/build-native" in text  # the image runs the compiled fold...
    assert "KIND == 'mypyc'" in text  # ...and checks that it does
    assert re.search(r"^USER fraudstream$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["fraudstream"]' in text
    for package in ("app", "features", "training", "expectations"):
        assert f"COPY {package} ./{package}" in text


def test_services_state_is_git_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".services/" in ignored
    assert ".venv" in ignored  # without the slash: a link named .venv is ignored too


def test_pyproject_packages_exist() -> None:
    for package in ("app", "features", "training", "expectations"):
        assert (ROOT / package / "__init__.py").exists()
    assert Path(ROOT / "app" / "cli.py").exists()

"""The deployment files stay true to the code.

docker-compose.yml parses and has the fleet's services; every command it or the Procfile
starts is a real command of this package (run with `--help`, which parses the subcommand
and every option, so a renamed option or subcommand fails here and not in production);
the Procfile and compose start the same programs.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from flower.command import is_flower_envvar, is_flower_option  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"postgres", "redis", "migrate", "worker", "beat", "flower", "mailpit"}
APP_SERVICES = ("migrate", "worker", "beat", "flower")
PROCESS_FOR_SERVICE = {"migrate": "release", "worker": "worker", "beat": "beat", "flower": "flower"}
REQUIRED_VARIABLES = {"FLOWER_BASIC_AUTH"}  # everything else has a local-dev default
DUMMY_ENV = {"FLOWER_BASIC_AUTH": "user:secret", "PORT": "5555", "HOSTNAME": "0123456789ab"}

# Compose interpolation and POSIX parameter expansion share this grammar:
# $$ (compose: a literal $), ${VAR}, ${VAR-x}, ${VAR:-x}, ${VAR?msg}, ${VAR:?msg}, ${VAR:+x}, $VAR
_VARIABLE = re.compile(
    r"\$\$"
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)


class MissingVariable(Exception):
    """A variable with no default is unset: compose (or the shell) refuses to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Expand variables the way compose / sh would, against `env`."""

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op") or "", match.group("arg") or ""
        is_set = name in env and (env[name] != "" or not op.startswith(":"))
        if op.endswith("+"):
            return arg if is_set else ""
        if is_set:
            return env[name]
        if op.endswith("-"):
            return arg
        raise MissingVariable(f"{name}: {arg or 'not set and no default'}")

    return _VARIABLE.sub(expand, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


@functools.cache
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def compose(env: Mapping[str, str] = DUMMY_ENV) -> dict[str, Any]:
    """The compose file as `docker compose config` would see it with `env` set."""
    resolved: dict[str, Any] = interpolate_tree(raw_compose(), env)
    return resolved


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def argv_of(command: str | list[str]) -> list[str]:
    """Compose runs a string command split shell-style (no shell); a list as given."""
    if isinstance(command, list):
        return [str(part) for part in command]
    return shlex.split(command)


def procfile() -> dict[str, str]:
    """process type -> raw command line (run by a shell, so variables expand there)."""
    processes: dict[str, str] = {}
    for number, line in enumerate(PROCFILE.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[a-z][a-z0-9_-]*", name), f"Procfile:{number}: {line!r}"
        assert name not in processes, f"Procfile:{number}: {name} defined twice"
        processes[name] = command.strip()
    return processes


def procfile_argv(process: str) -> list[str]:
    return shlex.split(interpolate(procfile()[process], DUMMY_ENV))


def program_and_subcommand(argv: list[str]) -> tuple[str, ...]:
    """("celery", "worker") for `celery -A worker worker ...`; ("balancectl", "db", "upgrade")."""
    program, *args = argv
    if program == "celery":
        assert args[:2] == ["-A", "worker"], f"celery must be started with -A worker: {argv}"
        return ("celery", args[2])
    if program == "balancectl":
        words = []
        for arg in args:
            if arg.startswith("-"):
                break
            words.append(arg)
        return ("balancectl", *words)
    raise AssertionError(f"unknown program {program!r} in {argv}")


def _balancectl() -> list[str]:
    """The installed `balancectl` console script, run with this interpreter."""
    values = {ep.value for ep in entry_points(group="console_scripts", name="balancectl")}
    assert len(values) == 1, f"balancectl entry point: {values or 'not installed'}"
    module, _, attr = values.pop().partition(":")
    code = (
        "import sys; sys.argv[0] = 'balancectl'; "
        f"from {module} import {attr} as main; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


@functools.cache
def _help(argv: tuple[str, ...], cwd: str) -> tuple[int, str]:
    program, *args = argv
    if program == "celery":
        cmd = [sys.executable, "-m", "celery", *args, "--help"]
    elif program == "balancectl":
        cmd = [*_balancectl(), *args, "--help"]
    else:
        raise AssertionError(f"unknown program {program!r} in {list(argv)}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def assert_real_command(argv: list[str], cwd: Path) -> None:
    """The program, subcommand and every option exist (click/typer refuse unknown ones)."""
    program_and_subcommand(argv)
    code, output = _help(tuple(argv), str(cwd))
    assert code == 0, f"{shlex.join(argv)} --help exited {code}:\n{output[-3000:]}"
    if argv[:4] == ["celery", "-A", "worker", "flower"]:
        # Flower passes its own options to tornado and silently drops unknown ones, so
        # `--help` proves nothing about them: check each against Flower's option table.
        unknown = [arg for arg in argv[4:] if not is_flower_option(arg)]
        assert not unknown, f"not Flower options (Flower would ignore them): {unknown}"


@pytest.fixture(scope="module")
def outside_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run commands from an empty folder, like the image's WORKDIR (no source tree, no .env)."""
    return tmp_path_factory.mktemp("deploy-cwd")


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_parses_with_exactly_the_fleet_services() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name in APP_SERVICES:
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"] == services["worker"]["image"]


def test_only_the_flower_credentials_are_required_everything_else_has_a_dev_default() -> None:
    env: dict[str, str] = {}  # a fresh machine: nothing set
    missing = set()
    while True:
        try:
            compose(env)
            break
        except MissingVariable as exc:
            name = str(exc).split(":", 1)[0]
            assert name not in missing
            missing.add(name)
            env[name] = "dummy"
    assert missing == REQUIRED_VARIABLES


def test_postgres_16_with_healthcheck_and_volume() -> None:
    postgres = service("postgres")
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_redis_keeps_its_data_and_never_evicts() -> None:
    redis = service("redis")
    argv = argv_of(redis["command"])
    assert argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "ping" in redis["healthcheck"]["test"]


def test_flower_requires_basic_auth_and_listens_on_localhost_only() -> None:
    raw = raw_compose()["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", raw), raw
    without = {k: v for k, v in DUMMY_ENV.items() if k != "FLOWER_BASIC_AUTH"}
    with pytest.raises(MissingVariable, match="FLOWER_BASIC_AUTH"):
        compose(without)
    with pytest.raises(MissingVariable, match="FLOWER_BASIC_AUTH"):
        compose({**without, "FLOWER_BASIC_AUTH": ""})

    flower = service("flower")
    assert is_flower_envvar("FLOWER_BASIC_AUTH")  # Flower reads it from its environment
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == DUMMY_ENV["FLOWER_BASIC_AUTH"]
    assert "--basic-auth=" in procfile()["flower"]
    with pytest.raises(MissingVariable, match="FLOWER_BASIC_AUTH"):
        interpolate(procfile()["flower"], {"PORT": "5555"})


def test_published_ports_bind_localhost_only() -> None:
    published = {
        name: svc.get("ports", []) for name, svc in compose()["services"].items() if "ports" in svc
    }
    assert set(published) >= {"flower"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all addresses"


def test_app_services_share_valid_settings() -> None:
    from config.settings import Settings

    known = {field.alias for field in Settings.model_fields.values()}
    for name in APP_SERVICES:
        env = {k: str(v) for k, v in service(name)["environment"].items()}
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["DATABASE_URL"]
        assert env["BROKER_URL"] == "redis://redis:6379/0"
        assert env["RESULT_BACKEND"] == "redis://redis:6379/1"
        assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("mailpit", "1025")
        assert env["MAIL_FROM"]
        app_env = {k: v for k, v in env.items() if not k.startswith("FLOWER_")}
        assert set(app_env) <= known, f"{name}: not settings: {set(app_env) - known}"
        settings = Settings.model_validate(app_env)  # passes the app's own validation
        settings.check_limits()
        assert not settings.embedded
    environments = [
        {k: v for k, v in service(n)["environment"].items() if not k.startswith("FLOWER_")}
        for n in APP_SERVICES
    ]
    assert all(e == environments[0] for e in environments)


def test_start_order_and_scaling() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("worker", "beat"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("worker", "beat"):  # `--scale` needs no fixed names or host ports
        assert "container_name" not in services[name]
        assert "ports" not in services[name]
    worker_argv = argv_of(services["worker"]["command"])
    hostname = next(a for a in worker_argv if a.startswith("--hostname="))
    assert "%h" in hostname  # one node name per replica


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_command_is_a_real_command(name: str, outside_checkout: Path) -> None:
    assert_real_command(argv_of(service(name)["command"]), outside_checkout)


def test_worker_healthcheck_is_a_real_command(outside_checkout: Path) -> None:
    kind, command = service("worker")["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    argv = shlex.split(interpolate(command, DUMMY_ENV))  # then the container's shell expands
    assert argv[:5] == ["celery", "-A", "worker", "inspect", "ping"]
    assert "--destination" in argv
    assert_real_command(argv, outside_checkout)


def test_migrate_is_balancectl_db_upgrade() -> None:
    assert argv_of(service("migrate")["command"]) == ["balancectl", "db", "upgrade"]


# --- Procfile -------------------------------------------------------------------------------


def test_procfile_has_release_worker_beat_flower() -> None:
    assert set(procfile()) == {"release", "worker", "beat", "flower"}


@pytest.mark.parametrize("process", ["release", "worker", "beat", "flower"])
def test_procfile_command_is_a_real_command(process: str, outside_checkout: Path) -> None:
    assert_real_command(procfile_argv(process), outside_checkout)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_procfile_and_compose_start_the_same_program(name: str) -> None:
    from_compose = program_and_subcommand(argv_of(service(name)["command"]))
    from_procfile = program_and_subcommand(procfile_argv(PROCESS_FOR_SERVICE[name]))
    assert from_compose == from_procfile


def test_self_check_a_wrong_command_is_caught(outside_checkout: Path) -> None:
    """The checks above would fail on a renamed option or subcommand."""
    for argv in (
        ["celery", "-A", "worker", "worker", "--no-such-option"],
        ["celery", "-A", "worker", "beet"],
        ["balancectl", "db", "upgrad"],
    ):
        with pytest.raises(AssertionError, match="exited"):
            assert_real_command(argv, outside_checkout)
    with pytest.raises(AssertionError, match="not Flower options"):
        assert_real_command(
            ["celery", "-A", "worker", "flower", "--basicauth=u:p"], outside_checkout
        )


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_installs_the_package_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert stages and all(image == "python:3.11-slim" for image in stages)
    assert re.search(r"pip install \.(\s|$)", text)
    assert "[dev]" not in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    copied = set(re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, re.MULTILINE))
    sources = {src for line in copied for src in line.split()}
    assert sources >= {"pyproject.toml", "README.md", "config", "worker"}
    assert not sources & ignored, "the Dockerfile copies a path .dockerignore leaves out"
    assert {".venv", ".env", ".git", "tests"} <= ignored

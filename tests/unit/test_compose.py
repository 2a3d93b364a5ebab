"""Static checks of the deployment stack: docker-compose.yaml, docker/Dockerfile, docker/.env.example.

No Docker engine is needed (none exists on the development machines or in CI): the compose file
is loaded with PyYAML and validated with ``jsonschema`` against the Compose Specification's own
JSON schema, vendored in tests/schemas/compose-spec.json (provenance in tests/schemas/README.md).
The rest of the module checks what that schema cannot express: that every Airflow service shares
one environment anchor, the executor, the secret handling, the healthchecks and dependency
conditions, the published ports, and the image's Dockerfile.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml
from jsonschema.validators import validator_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
SCHEMA_FILE = ROOT / "tests" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"

COMMON = "x-airflow-common"
# The stack's Airflow components; each must run the image built from docker/Dockerfile.
REQUIRED_AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
# The stack's secrets: Compose secrets (files), by name.
REQUIRED_SECRETS = {
    "postgres_password",
    "airflow_db_url",
    "airflow_result_backend",
    "airflow_fernet_key",
    "airflow_jwt_secret",
    "airflow_api_secret_key",
    "airflow_admin_password",
}
# Airflow options that hold a secret -> the secret file their *_CMD reads.
SECRET_OPTIONS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "airflow_db_url",
    "AIRFLOW__CELERY__RESULT_BACKEND": "airflow_result_backend",
    "AIRFLOW__CORE__FERNET_KEY": "airflow_fernet_key",
    "AIRFLOW__API_AUTH__JWT_SECRET": "airflow_jwt_secret",
    "AIRFLOW__API__SECRET_KEY": "airflow_api_secret_key",
}
# A variable (or environment key) whose name says it holds a secret.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|KEY", re.IGNORECASE)
# The one service allowed to publish a port beyond 127.0.0.1 (see test_ports_bind_loopback...).
PUBLIC_SERVICE = "airflow-apiserver"

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err},
# ${VAR:+alt}, ${VAR+alt}, and $VAR. "$$" is a literal "$" and is removed before matching.
_REF = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


# --------------------------------------------------------------------------------------------
# helpers


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _refs(text: str) -> Iterator[re.Match[str]]:
    """The interpolation references in one string (escaped "$$" excluded)."""
    return _REF.finditer(text.replace("$$", ""))


def _strings(node: Any) -> Iterator[str]:
    """Every string in a loaded YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _with_defaults(text: str) -> str:
    """Interpolate as compose would with an empty environment (defaults applied)."""

    def sub(m: re.Match[str]) -> str:
        if m.group("op") in (":-", "-"):
            return m.group("arg")
        if m.group("op") in (":?", "?"):
            return "REQUIRED"
        return ""

    return _REF.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def _required_ref(value: str) -> re.Match[str] | None:
    """The match if ``value`` is exactly one required reference ``${VAR:?message}``."""
    m = _REF.fullmatch(value)
    if m and m.group("op") == ":?" and m.group("arg").strip():
        return m
    return None


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _airflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the Airflow image: they build docker/Dockerfile or use its tag."""
    image = compose[COMMON]["image"]
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or svc.get("image") == image
    }


def _map_get(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            instr, _, args = full.partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def _declared_validator(schema: dict[str, Any]) -> type:
    """The validator class of the draft the schema's ``$schema`` names.

    ``validator_for`` keys its registry by the meta-schemas' own ids
    (``http://json-schema.org/draft-07/schema#``); the compose spec writes
    ``https://json-schema.org/draft-07/schema``, which it would not recognise and would answer
    with its newest draft. Normalise the scheme and the empty fragment, then look it up with
    no fallback.
    """
    declared = schema["$schema"]
    normalised = re.sub(r"^https://", "http://", declared).rstrip("#") + "#"
    cls = validator_for({"$schema": normalised}, default=None)
    assert cls is not None, f"no jsonschema validator for declared $schema {declared!r}"
    return cls


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    doc = _load_yaml(COMPOSE_FILE)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    import json

    with SCHEMA_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = _declared_validator(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def airflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _airflow_services(compose)


# --------------------------------------------------------------------------------------------
# the schema


def test_vendored_schema_declares_draft_07_and_validator_matches(schema, validator):
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema"
    assert type(validator) is jsonschema.Draft7Validator


def test_compose_file_is_valid_against_the_compose_spec(compose, validator):
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def _bad_depends_on_condition(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-scheduler"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _unknown_top_level_key(doc: dict[str, Any]) -> None:
    doc["servicez"] = {"oops": {"image": "busybox"}}


def _unknown_service_key(doc: dict[str, Any]) -> None:
    doc["services"]["redis"]["healthcheck"]["intervall"] = "10s"


def _depends_on_without_condition(doc: dict[str, Any]) -> None:
    doc["services"]["airflow-worker"]["depends_on"]["airflow-init"] = {"required": True}


@pytest.mark.parametrize(
    "mutate",
    [
        _bad_depends_on_condition,
        _unknown_top_level_key,
        _unknown_service_key,
        _depends_on_without_condition,
    ],
)
def test_validator_rejects_a_broken_copy(compose, validator, mutate):
    """The validator is not vacuous: small, real mistakes in a copy of the file fail it."""
    broken = copy.deepcopy(compose)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)
    validator.validate(compose)  # the original is untouched and still valid


# --------------------------------------------------------------------------------------------
# what the schema cannot express


def test_every_airflow_component_runs_the_bakery_image(compose, airflow_services):
    missing = REQUIRED_AIRFLOW_SERVICES - airflow_services.keys()
    assert not missing, f"services not on the Airflow image: {sorted(missing)}"
    build = compose[COMMON]["build"]
    assert build == {"context": ".", "dockerfile": "docker/Dockerfile",
                     "args": {"AIRFLOW_BASE_IMAGE": "${AIRFLOW_BASE_IMAGE:-apache/airflow:3.3.2-python3.11}"}}
    for name, svc in compose["services"].items():
        image = str(svc.get("image", ""))
        if "airflow" in image and name not in airflow_services:
            pytest.fail(f"{name} runs {image!r} instead of the image built from docker/Dockerfile")
    assert compose["services"]["airflow-apiserver"]["command"] == "api-server"
    assert compose["services"]["airflow-scheduler"]["command"] == "scheduler"
    assert compose["services"]["airflow-dag-processor"]["command"] == "dag-processor"
    assert compose["services"]["airflow-triggerer"]["command"] == "triggerer"
    assert compose["services"]["airflow-worker"]["command"] == "celery worker"


def test_airflow_services_share_the_common_environment_anchor(airflow_services):
    """Checked on the YAML node graph, before anchors and merge keys are resolved: each
    Airflow service's environment is the anchored mapping itself (inherited through
    ``<<: *airflow-common``) or a mapping that merges it (``<<: *airflow-common-env``)."""
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        root = yaml.compose(fh, Loader=yaml.SafeLoader)
    common = _map_get(root, COMMON)
    assert isinstance(common, yaml.MappingNode)
    anchor_env = _map_get(common, "environment")
    assert isinstance(anchor_env, yaml.MappingNode)
    services = _map_get(root, "services")
    for name in airflow_services:
        svc = _map_get(services, name)
        env = _map_get(svc, "environment")
        if env is None:
            assert _map_get(svc, "<<") is common, f"{name} neither merges {COMMON} nor sets environment"
            continue
        assert env is anchor_env or _map_get(env, "<<") is anchor_env, (
            f"{name}'s environment does not merge the airflow-common-env anchor"
        )


def test_airflow_services_do_not_override_the_common_environment(compose, airflow_services):
    common_env = compose[COMMON]["environment"]
    for name, svc in airflow_services.items():
        env = _environment(svc)
        changed = {k for k, v in common_env.items() if env.get(k) != v}
        assert not changed, f"{name} drops or overrides common settings: {sorted(changed)}"


def test_celery_executor_redis_and_postgres(compose, airflow_services):
    env = compose[COMMON]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
    # the two URLs are secret files that scripts/stack.sh secrets writes; the driver named: SQLAlchemy
    # 2.1 maps a bare postgresql:// to psycopg 3, not in the image
    stack_sh = (ROOT / "scripts" / "stack.sh").read_text()
    assert '"airflow_db_url", lambda: f"postgresql+psycopg2://airflow:{pw}@postgres/airflow"' in stack_sh
    assert '"airflow_result_backend", lambda: f"db+postgresql+psycopg2://airflow:{pw}@postgres/airflow"' in stack_sh
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    # users get the official images; the compose test substitutes local stand-ins by variable
    assert compose["services"]["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert compose["services"]["redis"]["image"] == "${REDIS_IMAGE:-redis:7.2-bookworm}"
    for name, svc in airflow_services.items():
        assert _environment(svc)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


def test_secrets_are_compose_secret_files_never_values(compose, airflow_services):
    """Every secret is a Compose secret (a file mounted at /run/secrets/<name>, from
    ${BAKERY_SECRETS_DIR:-./secrets}); no environment entry, interpolation or URL of the file holds a
    secret value: Airflow reads each through its ``*_CMD`` option, postgres through
    POSTGRES_PASSWORD_FILE (podman-compose turns every environment entry into `-e KEY=value` on a
    `podman create` command line)."""
    declared = compose["secrets"]
    assert set(declared) == REQUIRED_SECRETS
    for name, spec in declared.items():
        assert spec["file"] == f"${{BAKERY_SECRETS_DIR:-./secrets}}/{name}", (name, spec)
    common_env = _environment(compose[COMMON])
    for option, secret in SECRET_OPTIONS.items():
        assert common_env[f"{option}_CMD"] == f"cat /run/secrets/{secret}", option
        assert option not in common_env, f"{option} given as a value"
    for name, svc in airflow_services.items():
        assert set(SECRET_OPTIONS.values()) <= set(svc.get("secrets") or compose[COMMON]["secrets"]), name
    pg = compose["services"]["postgres"]
    assert _environment(pg)["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in _environment(pg) and pg["secrets"] == ["postgres_password"]
    assert "airflow_admin_password" in compose["services"]["airflow-init"]["secrets"]

    # No interpolated secret and no environment entry whose name says "secret" holding a value
    # (but a *_CMD reading a secret file, or a *_FILE naming one).
    for m in (m for s in _strings(compose) for m in _refs(s)):
        name = m.group("name") or m.group("bare")
        assert not SECRET_NAME.search(name) or name == "BAKERY_SECRETS_DIR", f"secret interpolated: {m.group(0)}"
    blocks = [(COMMON, compose[COMMON])] + list(compose["services"].items())
    for where, block in blocks:
        for key, value in _environment(block).items():
            if SECRET_NAME.search(key) or key.endswith("_CONN") or key.endswith("_BACKEND"):
                assert (key.endswith("_CMD") and str(value).startswith("cat /run/secrets/")) or (
                    key.endswith("_FILE") and str(value).startswith("/run/secrets/")), (
                    f"{where}: {key} must read a secret file, not hold {value!r}")
    # No password inside a URL either.
    for s in _strings(compose):
        for url in re.finditer(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:([^@/\s]*)@", s.replace("$$", "")):
            assert not url.group(1), f"a password in URL {s!r}"


def test_env_example_holds_no_secret():
    """docker/.env.example lists settings only: the secrets are files (scripts/stack.sh secrets)."""
    assert ENV_EXAMPLE.is_file()
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    leaked = {k for k in values if SECRET_NAME.search(k)}
    assert not leaked, f"secrets in docker/.env.example: {sorted(leaked)}"
    required = {m.group("name") for s in _strings(_load_yaml(COMPOSE_FILE)) for m in _refs(s) if m.group("op") == ":?"}
    assert not required, f"compose requires variables: {sorted(required)}"
    assert "scripts/stack.sh secrets" in ENV_EXAMPLE.read_text()


@pytest.mark.parametrize("name", ["postgres", "redis", "airflow-apiserver", "airflow-scheduler"])
def test_core_services_have_healthchecks(compose, name):
    hc = compose["services"][name].get("healthcheck")
    assert hc, f"{name} has no healthcheck"
    assert not hc.get("disable")
    test = hc["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, test


def test_dependency_conditions_can_be_met(compose, airflow_services):
    services = compose["services"]
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} restarts, so it never completes"
    for name in airflow_services:
        if name in ("airflow-init", "airflow-cli"):
            continue
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name


def test_init_migrates_creates_admin_and_packer_pool(compose):
    init = compose["services"]["airflow-init"]
    env = _environment(init)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    # the admin is created by the command, its password on stdin (the entrypoint's
    # _AIRFLOW_WWW_USER_CREATE would pass it on `airflow users create --password`)
    assert not [k for k in env if k.startswith("_AIRFLOW_WWW_USER")], env
    script = "\n".join(init["command"])
    assert 'pw="$$(cat /run/secrets/airflow_admin_password)"' in script
    assert "--password" not in script
    assert 'airflow pools set image_bakery_packer 2 ' in script
    assert "restart" not in init


def test_code_mounts_and_bakery_state_volume(compose, airflow_services):
    # scripts/: `prepare` runs scripts/build-base-image.sh (REPO_ROOT is /opt/airflow in the image)
    code = {f"./{d}:/opt/airflow/{d}:ro" for d in ("dags", "plugins", "include", "scripts")}
    common = set(compose[COMMON]["volumes"])
    assert code <= common
    for name, svc in airflow_services.items():
        assert common <= set(svc["volumes"]), f"{name} lacks common mounts: {sorted(common - set(svc['volumes']))}"
    bakery_home = compose[COMMON]["environment"]["BAKERY_HOME"]
    assert bakery_home == "/opt/bakery"
    worker_mounts = dict(v.split(":", 1) for v in compose["services"]["airflow-worker"]["volumes"])
    state = [src for src, dst in worker_mounts.items() if dst.split(":")[0] == bakery_home]
    assert state, "the worker does not mount a volume at BAKERY_HOME"
    assert state[0] in compose["volumes"], "the bakery state must be a named (top-level) volume"
    # /dev/kvm is optional: offered in a comment, never required by the file.
    assert "devices" not in compose["services"]["airflow-worker"]
    assert "/dev/kvm" in COMPOSE_FILE.read_text(encoding="utf-8")


def _host_ips(service: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
    """(host IP or None for all interfaces, the port entry) for each published port."""
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            yield port.get("host_ip"), str(port)
        elif isinstance(port, (int, float)):
            yield None, str(port)  # container port only: a random host port on every interface
        else:
            spec = _with_defaults(port).split("/", 1)[0]
            parts = spec.rsplit(":", 2)
            yield (parts[0].strip("[]") if len(parts) == 3 else None), port


def test_ports_bind_loopback_except_the_api_server(compose):
    """Nothing but the API server is reachable from other hosts by default.

    The API server is the bakery's front door: the UI and the REST API, used by people and by
    CI to trigger bakes. It authenticates every request (FAB auth manager, JWTs), so it is
    published on every interface unless AIRFLOW_API_BIND_ADDRESS says otherwise. Everything
    else (Postgres, Redis, flower, the worker's log server) either has no authentication of its
    own or no business off the host: not published at all, or bound to 127.0.0.1.
    """
    for name, svc in compose["services"].items():
        if name == PUBLIC_SERVICE:
            continue
        for host_ip, entry in _host_ips(svc):
            assert host_ip == "127.0.0.1", f"{name} publishes {entry!r} beyond 127.0.0.1"
    api = list(_host_ips(compose["services"][PUBLIC_SERVICE]))
    assert len(api) == 1 and _with_defaults(api[0][1]).endswith(":8080"), api
    for name in ("postgres", "redis"):
        assert not compose["services"][name].get("ports"), f"{name} must not be published"


# --------------------------------------------------------------------------------------------
# the image


def test_dockerfile_builds_on_airflow_and_installs_the_bake_tools():
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    instructions = _dockerfile_instructions()
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert froms == ["${AIRFLOW_BASE_IMAGE}"]
    # the official image unless a build argument names a stand-in (the compose test's)
    args = [args for instr, args in instructions[: instructions.index(("FROM", froms[0]))] if instr == "ARG"]
    assert args == ["AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11"]

    apt = [args for instr, args in instructions if instr == "RUN" and "apt-get install" in args]
    assert len(apt) == 1, "expected one RUN with apt-get install"
    install = apt[0].split("apt-get install", 1)[1].split("&&", 1)[0].split()
    packages = {tok for tok in install if not tok.startswith("-")}
    wanted = {"packer", "qemu-system-x86", "qemu-utils", "mmdebstrap", "fdisk", "e2fsprogs", "openssh-client"}
    assert wanted <= packages, f"missing apt packages: {sorted(wanted - packages)}"
    assert "rm -rf /var/lib/apt/lists/*" in apt[0]

    pip = [args for instr, args in instructions if instr == "RUN" and "pip install" in args]
    assert len(pip) == 1
    tokens = pip[0].split()
    assert tokens[tokens.index("-r") + 1].endswith("requirements.txt")
    assert tokens[tokens.index("-c") + 1].endswith("constraints.txt")

    users = [args for instr, args in instructions if instr == "USER"]
    assert users and users[-1] == "airflow", "the image must not end up running as root"
    # The pip install runs as the airflow user (the official image's rule).
    pip_at = next(i for i, (instr, args) in enumerate(instructions) if instr == "RUN" and "pip install" in args)
    last_user = [args for instr, args in instructions[:pip_at] if instr == "USER"][-1]
    assert last_user == "airflow"


def test_worker_is_sized_for_a_small_host_and_overridable(compose):
    """2 cores, 24 GiB by default: 4 Celery slots (the packer pool lets 2 of them build), 8 GiB."""
    worker = compose["services"]["airflow-worker"]
    assert _with_defaults(_environment(worker)["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) == "4"
    assert "AIRFLOW_WORKER_CONCURRENCY" in _environment(worker)["AIRFLOW__CELERY__WORKER_CONCURRENCY"]
    assert _with_defaults(worker["mem_limit"]) == "8g"
    assert "AIRFLOW_WORKER_MEM_LIMIT" in worker["mem_limit"]


def test_build_context_sends_only_what_the_dockerfile_copies():
    """The context is the repository root: .dockerignore keeps var/ (base images, gallery), .venv and
    .git out of it, and lets in every path the Dockerfile COPYs."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.strip().startswith("#")]
    assert ignore[0] == "*", "an allow-list is expected: '*' first, then the '!' exceptions"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for instr, args in _dockerfile_instructions():
        if instr == "COPY":
            sources = [tok for tok in args.split() if not tok.startswith("--")][:-1]
            for src in sources:
                assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"

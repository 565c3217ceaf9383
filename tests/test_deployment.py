"""The deployment files agree with each other and with the repository, without a Docker engine.

docker-compose.yml, docker/compose.gpu.yml and the Dockerfiles are parsed here (PyYAML and a small
Dockerfile reader) and checked for what a `docker compose up` needs: every service and build
context exists, every COPY source is in the build context and not excluded by .dockerignore,
base images are pinned, health checks are present, the serving image runs as a non-root user and
installs no training packages, jobs run in the right order, volumes are declared and shared.
When Debian's `docker-compose` (v1.29) is installed, `docker-compose config -q` validates the
files too; otherwise that one check is skipped.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker" / "compose.gpu.yml"
SERVE_DOCKERFILE = ROOT / "docker" / "Dockerfile.serve"
TRAIN_DOCKERFILE = ROOT / "docker" / "Dockerfile.train"
SERVE_REQUIREMENTS = ROOT / "docker" / "requirements-serve.txt"
CONSTRAINTS = ROOT / "docker" / "constraints.txt"

# Packages only training needs: the serving image must not install them (STYLE.md: serving loads
# SavedModels with plain TensorFlow, never TFRS).
TRAINING_ONLY = {"tensorflow-recommenders", "tf-keras", "tensorboard", "pyarrow"}
# Their import names, plus httpx (simulate and tests): serving's modules must import none of them.
LEFT_OUT_MODULES = ("tensorflow_recommenders", "tf_keras", "tensorboard", "pyarrow", "httpx")
# Serving's stand-ins for a pyproject dependency (a smaller build of the same package).
STAND_INS = {"tensorflow-cpu": "tensorflow"}
PINNED_TAG = re.compile(r"\d+\.\d+\.\d+")


# ---- a small Dockerfile reader ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    args: str  # the rest of the logical line, continuation lines joined
    line: int  # where it starts (1-based)


@dataclass(frozen=True)
class Stage:
    image: str  # the base image, global ARG defaults substituted
    name: str | None
    instructions: list[Instruction]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, `\\` continuations joined (no heredocs)."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines inside a continuation are dropped too, as Docker does
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, args = " ".join(parts).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, f"the Dockerfile ends inside a continuation (line {start})"
    return instructions


def stages(instructions: list[Instruction]) -> list[Stage]:
    """Build stages; global ARG defaults (before the first FROM) substituted into FROM lines."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "ARG" and not found:
            name, _, default = ins.args.partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(image, name, []))
        elif found:
            found[-1].instructions.append(ins)
    return found


def exec_form(args: str) -> list[str]:
    """The words of an instruction's arguments, JSON (exec) form or shell words."""
    if args.startswith("["):
        words = json.loads(args)
        assert isinstance(words, list), args
        return [str(w) for w in words]
    return shlex.split(args)


@dataclass(frozen=True)
class Copy:
    flags: dict[str, str]
    sources: list[str]
    dest: str
    line: int


def copies(stage: Stage) -> list[Copy]:
    found = []
    for ins in stage.instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = exec_form(ins.args)
        flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"line {ins.line}: {ins.keyword} needs a source and a destination"
        found.append(Copy(flags, paths[:-1], paths[-1], ins.line))
    return found


def final_keyword(stage: Stage, keyword: str) -> Instruction | None:
    matching = [ins for ins in stage.instructions if ins.keyword == keyword]
    return matching[-1] if matching else None


# ---- .dockerignore (moby's patternmatcher rules, the subset we use) ------------------------


def dockerignore_rules(context: Path) -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, excludes) in file order: `!` re-includes; the last matching rule wins."""
    path = context / ".dockerignore"
    rules = []
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex), excludes))
    return rules


def ignored(relative: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether .dockerignore leaves `relative` (or a directory above it) out of the context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern, excludes in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            excluded = excludes
    return excluded


# ---- fixtures ----------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def built_dockerfiles(services: dict[str, dict[str, Any]]) -> dict[str, tuple[Path, Path]]:
    """service -> (build context, Dockerfile) for every service that builds an image."""
    found = {}
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (ROOT / build.get("context", ".")).resolve()
        found[name] = (context, context / build.get("dockerfile", "Dockerfile"))
    return found


def image_stages(path: Path) -> list[Stage]:
    found = stages(parse_dockerfile(path.read_text()))
    assert found, f"{path.name}: no FROM"
    return found


def requirement_lines(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def pyproject_dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """source -> (target, read_only) for the service's volumes, short or long syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts[source] = (target, "ro" in mode)
        else:
            mounts[volume["source"]] = (volume["target"], bool(volume.get("read_only")))
    return mounts


# ---- compose ---------------------------------------------------------------------------------


def test_compose_has_the_four_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "trainer", "materialize", "server"} <= set(services)


def test_build_contexts_and_dockerfiles_exist(services: dict[str, dict[str, Any]]) -> None:
    built = built_dockerfiles(services)
    assert {"trainer", "materialize", "server"} <= set(built)
    for name, (context, dockerfile) in built.items():
        assert context.is_dir(), f"{name}: build context {context} is not a directory"
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    assert built["server"][1] == SERVE_DOCKERFILE
    assert built["trainer"][1] == built["materialize"][1] == TRAIN_DOCKERFILE
    assert services["trainer"]["image"] == services["materialize"]["image"]


def test_server_waits_for_redis_and_both_jobs(services: dict[str, dict[str, Any]]) -> None:
    assert services["server"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "trainer": {"condition": "service_completed_successfully"},
        "materialize": {"condition": "service_completed_successfully"},
    }
    assert services["materialize"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "trainer": {"condition": "service_completed_successfully"},
    }
    for job in ("trainer", "materialize"):  # one-shot: restarting would loop
        assert str(services[job].get("restart", "no")) == "no", job


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    redis_test = services["redis"]["healthcheck"]["test"]
    assert redis_test[0] == "CMD" and redis_test[1:] == ["redis-cli", "ping"]
    server_test = services["server"]["healthcheck"]["test"]
    assert server_test[0] == "CMD" and "/readyz" in " ".join(server_test)
    serve = image_stages(SERVE_DOCKERFILE)[-1]
    healthcheck = final_keyword(serve, "HEALTHCHECK")
    assert healthcheck is not None, "Dockerfile.serve: no HEALTHCHECK"
    assert " CMD " in f" {healthcheck.args} " and "/readyz" in healthcheck.args
    assert "curl" not in healthcheck.args and "wget" not in healthcheck.args  # not in slim images


def test_named_volumes_are_declared_and_shared(compose: dict[str, Any]) -> None:
    services, declared = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        for source in volume_mounts(service):
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
    trainer, server = volume_mounts(services["trainer"]), volume_mounts(services["server"])
    materialize = volume_mounts(services["materialize"])
    # the trainer exports where the server reads, and synthesizes where materialize reads
    assert trainer["models"][0] == services["trainer"]["environment"]["MODELS_DIR"]
    assert server["models"] == ("/models", True)
    assert trainer["data"][0] == services["trainer"]["environment"]["DATA_DIR"] == "/data"
    models_flag = services["server"]["command"].index("--models")
    assert services["server"]["command"][models_flag + 1] == server["models"][0]
    data_flag = services["materialize"]["command"].index("--data")
    assert services["materialize"]["command"][data_flag + 1] == materialize["data"][0]


def test_server_and_materialize_use_the_redis_service(services: dict[str, dict[str, Any]]) -> None:
    url = services["server"]["environment"]["MTRANK_REDIS_URL"]
    command = services["materialize"]["command"]
    assert command[:2] == ["features", "materialize"]
    assert command[command.index("--redis") + 1] == url
    assert re.fullmatch(r"redis://redis:6379/\d+", url), url


def test_server_port(services: dict[str, dict[str, Any]]) -> None:
    server = services["server"]
    targets = [
        str(p).rsplit(":", 1)[-1] if isinstance(p, str) else p["target"] for p in server["ports"]
    ]
    assert [str(t) for t in targets] == ["8000"]
    assert str(server["environment"]["MTRANK_PORT"]) == "8000"
    assert server["environment"]["MTRANK_HOST"] == "0.0.0.0"
    serve = image_stages(SERVE_DOCKERFILE)[-1]
    exposed = final_keyword(serve, "EXPOSE")
    assert exposed is not None and exposed.args.split() == ["8000"]


def test_trainer_job_is_installed_in_the_train_image(services: dict[str, dict[str, Any]]) -> None:
    entrypoint = services["trainer"]["entrypoint"]
    destinations = {c.dest for c in copies(image_stages(TRAIN_DOCKERFILE)[-1])}
    assert entrypoint[0] in {Path(d).name for d in destinations} | destinations
    assert set(services["trainer"]["environment"]["ARCHITECTURES"].split()) != set()


def test_gpu_override_reserves_nvidia_gpus_for_the_trainer(
    services: dict[str, dict[str, Any]],
) -> None:
    override = load_yaml(GPU_OVERRIDE)["services"]
    assert set(override) <= set(services), "the GPU file names a service the main file lacks"
    devices = override["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


# ---- Dockerfiles -------------------------------------------------------------------------------


DOCKERFILES = [SERVE_DOCKERFILE, TRAIN_DOCKERFILE]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(
    dockerfile: Path, services: dict[str, dict[str, Any]]
) -> None:
    contexts = {df: ctx for ctx, df in built_dockerfiles(services).values()}
    context = contexts[dockerfile]
    rules = dockerignore_rules(context)
    stage_names = {s.name for s in image_stages(dockerfile)}
    for stage in image_stages(dockerfile):
        for copy in copies(stage):
            if "from" in copy.flags:  # from another stage or image, not the context
                assert copy.flags["from"] in stage_names, f"line {copy.line}: unknown stage"
                continue
            for source in copy.sources:
                relative = source.removeprefix("./").strip("/") or "."
                matches = list(context.glob(relative)) if relative != "." else [context]
                where = f"{dockerfile.name} line {copy.line}"
                assert matches, f"{where}: COPY source {source!r} is not in {context}"
                assert not ignored(relative, rules), f"{where}: .dockerignore excludes {source!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    all_stages = image_stages(dockerfile)
    names = {s.name for s in all_stages if s.name}
    for stage in all_stages:
        if stage.image in names:
            continue  # FROM an earlier stage
        assert "$" not in stage.image, f"{dockerfile.name}: unresolved FROM {stage.image}"
        assert_pinned(stage.image, dockerfile.name)


def test_compose_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" not in service:
            assert_pinned(service["image"], name)


def assert_pinned(image: str, where: str) -> None:
    if "@sha256:" in image:
        return
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    assert tag and tag != "latest", f"{where}: {image} has no version tag"
    assert PINNED_TAG.search(tag), f"{where}: {image} is not pinned to a full version (x.y.z)"


def test_serve_image_runs_as_a_non_root_user() -> None:
    final = image_stages(SERVE_DOCKERFILE)[-1]
    user = final_keyword(final, "USER")
    assert user is not None, "Dockerfile.serve: the final stage has no USER (it would run as root)"
    assert user.args.split(":")[0] not in ("root", "0"), user.args
    later = [i for i in final.instructions if i.line > user.line and i.keyword == "USER"]
    assert not later


def test_images_run_mtrank() -> None:
    serve, train = image_stages(SERVE_DOCKERFILE)[-1], image_stages(TRAIN_DOCKERFILE)[-1]
    for stage in (serve, train):
        entrypoint = final_keyword(stage, "ENTRYPOINT")
        assert entrypoint is not None and exec_form(entrypoint.args) == ["mtrank"]
    cmd = final_keyword(serve, "CMD")
    assert cmd is not None and exec_form(cmd.args)[:3] == ["serve", "--models", "/models"]


def test_serve_image_installs_no_training_packages() -> None:
    final = image_stages(SERVE_DOCKERFILE)[-1]
    runs = [i.args for i in final.instructions if i.keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs, "Dockerfile.serve installs nothing with pip"
    for run in installs:  # requirement files, or the project without its dependencies
        assert " -r " in run or "--no-deps" in run, f"Dockerfile.serve: {run!r}"
    copied = {Path(s).name for c in copies(final) for s in c.sources}
    assert SERVE_REQUIREMENTS.name in copied
    words = " ".join(runs).lower().replace("_", "-")
    names = {canonicalize_name(r.name) for r in requirement_lines(SERVE_REQUIREMENTS)}
    for package in TRAINING_ONLY:
        assert package not in words, f"Dockerfile.serve installs {package}"
        assert package not in names, f"{SERVE_REQUIREMENTS.name} lists {package}"


def test_serving_modules_import_nothing_the_serve_image_leaves_out() -> None:
    """Import every serving module, and the `mtrank` dispatcher, with those packages blocked."""
    code = f"""
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LEFT_OUT_MODULES!r}:
            raise ImportError(f"{{name}} is not in the serving image")
sys.meta_path.insert(0, Block())
import serving, training.cli
for module in pkgutil.walk_packages(serving.__path__, "serving."):
    importlib.import_module(module.name)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_serve_requirements_are_project_dependencies() -> None:
    dependencies = pyproject_dependencies()
    for requirement in requirement_lines(SERVE_REQUIREMENTS):
        name = canonicalize_name(requirement.name)
        assert STAND_INS.get(name, name) in dependencies, f"{name} is not in pyproject.toml"
        pinned = [s for s in requirement.specifier if s.operator == "=="]
        if name in STAND_INS and pinned:  # the same version as the package it stands in for
            assert dependencies[STAND_INS[name]].specifier.contains(pinned[0].version)


def test_constraints_pin_every_dependency_within_pyproject() -> None:
    pins = {}
    for requirement in requirement_lines(CONSTRAINTS):
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"constraints.txt: {requirement} is not a pin"
        pins[canonicalize_name(requirement.name)] = spec.version
    for name, requirement in pyproject_dependencies().items():
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"
    assert "mtrank" not in pins


def test_dockerignore_keeps_local_state_out() -> None:
    rules = dockerignore_rules(ROOT)
    for path in (".git", ".venv", "data", "models", "ranker/__pycache__", "x/y.parquet"):
        assert ignored(path, rules), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "serving/app.py", "docker/train-job.sh"):
        assert not ignored(path, rules), f".dockerignore excludes {path}"


# ---- docker-compose config -----------------------------------------------------------------


@pytest.mark.parametrize(
    "files", [[COMPOSE], [COMPOSE, GPU_OVERRIDE]], ids=["compose", "compose+gpu"]
)
def test_docker_compose_config_accepts_the_files(files: list[Path]) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip(
            "Debian's docker-compose is not installed (apt-get install --no-install-recommends docker-compose)"
        )
    command = [tool, *(arg for f in files for arg in ("-f", str(f))), "config", "-q"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

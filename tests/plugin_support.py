"""Installing a test plugin as a real distribution, and a local service whose processes can import it."""

from __future__ import annotations

import os
import pathlib
import shutil


def install_distribution(directory: pathlib.Path, module_file: pathlib.Path, dist: str, entry_points: str) -> None:
    """Copy ``module_file`` into ``directory`` with a dist-info carrying ``entry_points`` (the text of
    entry_points.txt): exactly what ``pip install`` would leave in site-packages. The caller puts
    ``directory`` on sys.path."""
    shutil.copy(module_file, directory / module_file.name)
    info = directory / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def service_with_path(extra: pathlib.Path, *args, **kwargs):
    """A ``LocalService`` whose worker and collector processes also import from ``extra``."""
    from workers.local_service import LocalService

    class WithPath(LocalService):
        @property
        def env(self) -> dict[str, str]:
            env = super().env
            return {**env, "PYTHONPATH": os.pathsep.join([env["PYTHONPATH"], str(extra)])}

    return WithPath(*args, **kwargs)

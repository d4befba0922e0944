"""The operator image run the way the chart runs it, with podman (no Docker engine here).

The chart's pod: ``runAsUser``/``runAsGroup`` 65532, ``readOnlyRootFilesystem``, every
capability dropped, ``allowPrivilegeEscalation: false``, seccomp ``RuntimeDefault`` and an
emptyDir on ``/tmp``: podman's ``--user 65532:65532 --read-only --cap-drop=ALL
--security-opt no-new-privileges`` with its default seccomp profile, and ``/tmp`` as the
only writable mount (``--read-only-tmpfs=false``: podman otherwise adds writable tmpfs
mounts on /var/tmp and /run as well). The network is the host's, so the operator reaches
the test's API server and Prometheus on 127.0.0.1.

``scripts/image/containers.conf`` (``CONTAINERS_CONF``) makes podman work in this sandbox:
runc instead of crun, and ulimits at or below the sandbox's hard limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = REPO / "scripts" / "image" / "containers.conf"
VALUES = REPO / "charts" / "forescale" / "values.yaml"
#: The chart's securityContext (values.yaml), as podman flags.
USER = "65532:65532"


def chart_tmp_size() -> str:
    """The chart's /tmp emptyDir ``sizeLimit`` (``tmpSizeLimit``, e.g. 256Mi) for tmpfs."""
    import yaml

    limit = str(yaml.safe_load(VALUES.read_text())["tmpSizeLimit"])
    match = re.fullmatch(r"(\d+)([MG])i", limit)
    assert match, f"tmpSizeLimit {limit!r} is not <n>Mi or <n>Gi"
    return f"{match.group(1)}{match.group(2).lower()}"


def pyproject_version() -> str:
    """The one source of the version: pyproject.toml's ``[project] version``."""
    match = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(),
                      re.MULTILINE)
    assert match, "pyproject.toml has no [project] version"
    return match.group(1)


def image_ref() -> str:
    """The image ``make image`` builds (``scripts/image/common.sh``), or ``$IMAGE``."""
    return os.environ.get("IMAGE", f"ghcr.io/forescale/forescale:{pyproject_version()}")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF",
                                                            str(CONTAINERS_CONF))}


def podman(*args: str, check: bool = True, timeout: float = 120.0,
           input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: run 'make image' (it installs podman, "
                           "buildah and runc with apt-get)")
    result = subprocess.run(["podman", *args], capture_output=True, text=True,
                            timeout=timeout, env=podman_env(), input=input_text, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return result


def inspect(image: str) -> dict[str, Any]:
    out = podman("image", "inspect", image).stdout
    return dict(json.loads(out)[0])


def chart_flags(*, volumes: Sequence[tuple[Path, str]] = (),
                env: dict[str, str] | None = None) -> list[str]:
    """``podman run`` flags for the chart's security context; ``volumes`` are mounted
    read-only (host path, container path)."""
    flags = ["--user", USER, "--read-only", "--read-only-tmpfs=false",
             "--tmpfs", f"/tmp:rw,size={chart_tmp_size()},mode=1777",
             "--cap-drop=ALL", "--security-opt", "no-new-privileges",
             "--network", "host"]
    for host, inside in volumes:
        flags += ["--volume", f"{host}:{inside}:ro"]
    for key, value in (env or {}).items():
        flags += ["--env", f"{key}={value}"]
    return flags


def run_in_image(image: str, *argv: str, entrypoint: str = "python3",
                 volumes: Sequence[tuple[Path, str]] = (),
                 timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run one command in the image under the chart's security context; returns it whole
    (the caller checks the exit code: some tests expect a failure)."""
    return podman("run", "--rm", *chart_flags(volumes=volumes), "--entrypoint", entrypoint,
                  image, *argv, check=False, timeout=timeout)


@dataclass
class Container:
    """A detached container; its log is read with ``podman logs``."""

    name: str
    image: str

    @classmethod
    def start(cls, image: str, args: Sequence[str], *,
              volumes: Sequence[tuple[Path, str]] = (),
              env: dict[str, str] | None = None) -> Container:
        name = f"forescale-test-{uuid.uuid4().hex[:8]}"
        podman("run", "--detach", "--name", name, *chart_flags(volumes=volumes, env=env),
               image, *args)
        return cls(name, image)

    def state(self) -> dict[str, Any]:
        out = podman("container", "inspect", self.name).stdout
        return dict(json.loads(out)[0]["State"])

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def logs(self, tail: int | None = None) -> str:
        args = ["logs", *(["--tail", str(tail)] if tail else []), self.name]
        result = podman(*args, check=False)
        return result.stdout + result.stderr

    def stop(self, timeout_seconds: int = 20) -> int:
        """SIGTERM (the kubelet's stop), SIGKILL after the grace period; the exit code."""
        podman("stop", "--time", str(timeout_seconds), self.name, check=False,
               timeout=timeout_seconds + 60)
        return int(self.state().get("ExitCode", -1))

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            podman("rm", "--force", "--time", "5", self.name, check=False)


def self_contained_kubeconfig(source: Path, directory: Path | None = None) -> Path:
    """A copy of a kubeconfig with every file it names (CA, client certificate and key)
    inlined as ``*-data``, so that mounting this one file into a container is enough."""
    import base64

    import yaml

    doc = yaml.safe_load(source.read_text())
    base = source.parent
    for section, keys in (("clusters", ("certificate-authority",)),
                          ("users", ("client-certificate", "client-key", "tokenFile"))):
        for entry in doc.get(section) or []:
            inner = entry.get(section[:-1]) or {}
            for key in keys:
                if key in inner:
                    path = Path(inner.pop(key))
                    data = (path if path.is_absolute() else base / path).read_bytes()
                    if key == "tokenFile":
                        inner["token"] = data.decode().strip()
                    else:
                        inner[f"{key}-data"] = base64.b64encode(data).decode()
    target_dir = directory or Path(tempfile.mkdtemp(prefix="forescale-kubeconfig-"))
    target = target_dir / "kubeconfig.yaml"
    target.write_text(yaml.safe_dump(doc))
    target.chmod(0o644)  # the container's user 65532 reads it
    return target

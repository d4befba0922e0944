"""What the image holds, and that it runs under the chart's security context.

Each check runs in a container with the chart's flags (``podman.chart_flags``): user
65532, read-only root, no capabilities, no privilege escalation, /tmp the only writable
mount.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.image.podman import REPO, inspect, pyproject_version, run_in_image

CONSTRAINTS = REPO / "constraints.txt"
VALUES = REPO / "charts" / "forescale" / "values.yaml"


def _python(image: str, code: str) -> str:
    result = run_in_image(image, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_runs_as_65532_with_no_capabilities_and_only_tmp_writable(image: str) -> None:
    out = json.loads(_python(image, """
import errno, json, os
status = dict(l.split(':', 1) for l in open('/proc/self/status'))
writable = {}
for path in ('/', '/etc', '/opt/forescale', '/models', '/var/tmp', '/run', '/tmp'):
    try:
        with open(os.path.join(path, 'forescale-probe'), 'w') as f:
            f.write('x')
        writable[path] = 'written'
    except OSError as e:
        writable[path] = errno.errorcode[e.errno]
mounts = [l.split() for l in open('/proc/self/mounts')]
rw = sorted(m[1] for m in mounts if 'rw' in m[3].split(',')
            and not m[1].startswith(('/proc', '/dev', '/sys')))
print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),
                  'caps': {k: v.strip() for k, v in status.items() if k.startswith('Cap')},
                  'no_new_privs': status['NoNewPrivs'].strip(),
                  'seccomp': status['Seccomp'].strip(), 'writable': writable, 'rw': rw}))
"""))
    assert (out["uid"], out["gid"]) == (65532, 65532)
    assert set(out["groups"]) <= {65532}
    assert set(out["caps"].values()) == {"0000000000000000"}, out["caps"]
    assert out["no_new_privs"] == "1"
    assert out["seccomp"] == "2"  # a filter: podman's default profile, as RuntimeDefault
    assert out["writable"].pop("/tmp") == "written"
    # Read-only file system everywhere else (EROFS), not merely a permission error.
    assert set(out["writable"].values()) == {"EROFS"}, out["writable"]
    assert out["rw"] == ["/tmp"], out["rw"]


def test_holds_exactly_the_pinned_dependencies(image: str) -> None:
    installed = json.loads(_python(image, """
import json
from importlib.metadata import distributions
print(json.dumps({d.metadata['Name']: d.version for d in distributions()}))
"""))
    pins = _pins()
    normalised = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in installed.items()}
    assert normalised.pop("forescale") == pyproject_version()
    # The venv's own tools (pip freeze, which writes constraints.txt, leaves them out);
    # everything else must be pinned, at exactly the pinned version: torch's CUDA build
    # (PyPI's, used here) brings nvidia-*, cuda-* and triton, pinned there too.
    for tool in ("pip", "setuptools", "wheel"):
        normalised.pop(tool, None)
    unpinned = sorted(set(normalised) - set(pins))
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    # Without the local label: the CPU index's torch (the published recipe) is 2.13.0+cpu.
    wrong = {k: (v, pins[k]) for k, v in normalised.items() if pins[k] != v.split("+")[0]}
    assert not wrong, f"installed version differs from constraints.txt: {wrong}"
    assert normalised["torch"].split("+")[0] == pins["torch"] == "2.13.0"


def test_torch_is_the_build_the_image_records(image: str) -> None:
    """The build checked torch and wrote /opt/forescale/torch-build; check it again as the
    operator's user: the version is the pinned one, and the record says which build."""
    out = json.loads(_python(image, """
import json, torch
print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda,
                  'record': open('/opt/forescale/torch-build').read().split(),
                  'threads': torch.get_num_threads(),
                  'sum': float(torch.ones(3, 3).sum())}))
"""))
    version, build = out["record"]
    assert version == out["version"] and version.split("+")[0] == _pins()["torch"]
    assert build == ("cpu" if out["cuda"] is None else "cuda")
    assert out["sum"] == 9.0  # torch computes on the CPU as user 65532, read-only root


def test_models_are_where_the_chart_expects_them(image: str) -> None:
    """The chart passes --models-dir={models.mountPath}; the image's default command says
    the same, and the bundled artifact loads there as the operator's user."""
    mount_path = yaml.safe_load(VALUES.read_text())["models"]["mountPath"]
    config = inspect(image)["Config"]
    assert config["Entrypoint"] == ["forescale", "run"]
    assert f"--models-dir={mount_path}" in config["Cmd"]
    assert str(config["User"]) == "65532:65532"
    bundled = sorted(p.name for p in (REPO / "models").iterdir() if p.is_dir())
    out = json.loads(_python(image, f"""
import json, os
from forescale.core.forecast.lstm import LSTMForecaster
loaded = {{}}
for name in sorted(os.listdir({mount_path!r})):
    model = LSTMForecaster.load(os.path.join({mount_path!r}, name))
    loaded[name] = type(model).__name__
print(json.dumps(loaded))
"""))
    assert sorted(out) == bundled and bundled
    assert set(out.values()) == {"LSTMForecaster"}


def test_the_cli_answers_and_rejects_bad_flags_with_exit_2(image: str) -> None:
    version = run_in_image(image, "--version", entrypoint="forescale")
    assert version.returncode == 0, version.stderr
    assert pyproject_version() in version.stdout
    bad = run_in_image(image, "run", "--namespace", "x", "--workers", "0",
                       entrypoint="forescale")
    assert bad.returncode == 2, (bad.stdout, bad.stderr)


def test_image_labels_carry_the_version(image: str) -> None:
    labels = inspect(image)["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == pyproject_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert Path(image).name.endswith(f":{pyproject_version()}")

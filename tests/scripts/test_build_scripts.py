"""The fresh-machine contract of the Makefile and ``scripts/controlplane/build.sh``.

Everything runs on copies in tmp_path with stand-ins for ``go`` and ``python3``: no network,
no real build (the real build is what ``make controlplane`` and the integration tiers use).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KUBE = "kubernetes-" + next(
    line.split("=", 1)[1].strip().strip('"')
    for line in (REPO / "scripts" / "controlplane" / "versions.env").read_text().splitlines()
    if line.startswith("KUBERNETES_VERSION="))

#: A stand-in for ``go``: ``version`` answers like Go 1.26; ``build -ldflags F -o DIR/ pkgs``
#: writes one executable per package into DIR (relative to the working directory, as the
#: real go does) holding the link flags. FAKE_GO_FAIL_AFTER_FIRST makes it fail after one.
FAKE_GO = textwrap.dedent("""\
    #!/usr/bin/env bash
    if [[ "$1" == version ]]; then echo "go version go1.26.8 linux/amd64"; exit 0; fi
    [[ "$1" == build ]] || exit 2
    shift
    ld= out=
    while [[ $# -gt 0 ]]; do
      case "$1" in
        -ldflags) ld=$2; shift 2 ;;
        -o) out=$2; shift 2 ;;
        *) break ;;
      esac
    done
    for pkg in "$@"; do
      name=${pkg##*/}
      [[ "$pkg" == . ]] && name=$(sed -n 's/^module .*\\///p' go.mod)
      mkdir -p "$out"
      printf '%s\\n' "$ld" > "$out/$name"; chmod +x "$out/$name"
      if [[ -n "${FAKE_GO_FAIL_AFTER_FIRST:-}" ]]; then echo "fake go: failed" >&2; exit 1; fi
    done
    """)


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone holding scripts/controlplane (the script, the pins, the modules' go.mod and
    go.sum)."""
    src = REPO / "scripts" / "controlplane"
    dst = tmp_path / "clone" / "scripts" / "controlplane"
    dst.mkdir(parents=True)
    for name in ("build.sh", "versions.env"):
        shutil.copy2(src / name, dst / name)
    for module in ("kubernetes", "etcd", "helm"):
        shutil.copytree(src / module, dst / module)
    return tmp_path / "clone"


@pytest.fixture
def go(tmp_path: Path) -> Path:
    return _executable(tmp_path / "go", FAKE_GO)


def _build(clone: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/controlplane/build.sh", *args], check=False, cwd=clone,
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(clone.parent / "home"), **env})


def test_a_relative_cache_gets_the_binaries_not_an_empty_entry(clone: Path, go: Path) -> None:
    # The build runs inside the module directory: a relative cache path there put the
    # binaries into the clone and marked an empty cache entry complete for good.
    env = {"FORESCALE_GO": str(go), "FORESCALE_CONTROLPLANE_CACHE": ".cache/controlplane"}
    built = _build(clone, env)
    assert built.returncode == 0, built.stderr
    kube_dir = Path(_build(clone, env, "--print").stdout.split()[0])
    assert kube_dir.is_absolute() and kube_dir.parent == clone / ".cache" / "controlplane"
    assert sorted(p.name for p in kube_dir.iterdir()) == [
        ".complete", "kube-apiserver", "kube-controller-manager", "kubectl"]


def test_a_changed_link_flag_rebuilds_and_an_unchanged_tree_does_not(
        clone: Path, go: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"FORESCALE_GO": str(go), "FORESCALE_CONTROLPLANE_CACHE": str(cache)}
    assert _build(clone, env).returncode == 0
    kubectl = cache / KUBE / "kubectl"
    first = kubectl.stat().st_mtime_ns
    again = _build(clone, env)
    assert again.returncode == 0 and "built" not in again.stderr
    assert kubectl.stat().st_mtime_ns == first
    script = clone / "scripts" / "controlplane" / "build.sh"
    script.write_text(script.read_text().replace(".gitTreeState=clean", ".gitTreeState=dirty"))
    rebuilt = _build(clone, env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "gitTreeState=dirty" in kubectl.read_text()


@pytest.mark.parametrize(("name", "appended"), [
    ("go.sum", "example.com/patched v1.0.0 h1:x=\n"),
    # etcd's binary is built from this repository's main.go: edited, the stale binary
    # stayed, its entry's fingerprint unchanged.
    ("main.go", "\n// a changed entry point\n"),
])
def test_a_changed_module_file_rebuilds_that_tool_only(
        clone: Path, go: Path, tmp_path: Path, name: str, appended: str) -> None:
    cache = tmp_path / "cache"
    env = {"FORESCALE_GO": str(go), "FORESCALE_CONTROLPLANE_CACHE": str(cache)}
    assert _build(clone, env).returncode == 0
    (cache / "etcd-v0").mkdir()  # unrelated entries are left alone
    changed = clone / "scripts" / "controlplane" / "etcd" / name
    changed.write_text(changed.read_text() + appended)
    rebuilt = _build(clone, env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "built etcd" in rebuilt.stderr and "kube-apiserver" not in rebuilt.stderr


def test_failed_builds_leave_no_temporary_directory(clone: Path, go: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {"FORESCALE_GO": str(go), "FORESCALE_CONTROLPLANE_CACHE": str(cache),
           "FAKE_GO_FAIL_AFTER_FIRST": "1"}
    for _ in range(2):
        assert _build(clone, env).returncode != 0
        # Removed by the failed run itself, not only by the next one's sweep.
        assert sorted(p.name for p in cache.iterdir() if ".partial." in p.name) == []
    # One left by a run that was killed (its pid gone) is removed by the next run.
    dead = cache / f"{KUBE}.partial.999999999"
    dead.mkdir()
    (dead / "kubectl").write_text("half")
    env.pop("FAKE_GO_FAIL_AFTER_FIRST")
    assert _build(clone, env).returncode == 0
    assert sorted(p.name for p in cache.iterdir() if ".partial." in p.name) == []


def test_a_build_that_leaves_a_binary_out_is_not_complete(
        clone: Path, tmp_path: Path) -> None:
    lazy = _executable(tmp_path / "go", FAKE_GO.replace('for pkg in "$@"; do',
                                                         'for pkg in "${@:2}"; do'))
    env = {"FORESCALE_GO": str(lazy), "FORESCALE_CONTROLPLANE_CACHE": str(tmp_path / "cache")}
    built = _build(clone, env)
    assert built.returncode != 0 and "left no kube-apiserver" in built.stderr
    assert not (tmp_path / "cache" / KUBE).exists()


# --- Makefile ----------------------------------------------------------------------------

def _make_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, clone / name)
    return clone


def _make(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", *args], check=False, cwd=clone, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(clone)})


def test_make_install_makes_a_venv_left_without_pip_again(tmp_path: Path) -> None:
    # Debian without python3-venv: `python3 -m venv` leaves .venv/bin/python and no pip
    # (as does an interrupted ensurepip). Later runs must not trust it.
    clone = _make_clone(tmp_path)
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(clone / ".venv")], check=True)
    log = tmp_path / "python.log"
    python = _executable(tmp_path / "python3", textwrap.dedent(f"""\
        #!/usr/bin/env bash
        echo "python3 $*" >> {log}
        if [[ "$1 $2" == "-m venv" ]]; then
          rm -rf "$3"; mkdir -p "$3/bin"
          printf '#!/bin/sh\\necho "venv $*" >> {log}\\n' > "$3/bin/python"
          chmod +x "$3/bin/python"
        fi
        """))
    result = _make(clone, "install", f"PYTHON={python}")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text()
    assert "-m venv .venv" in calls and "venv -m pip install" in calls


def test_make_constraints_never_empties_the_pins(tmp_path: Path) -> None:
    """The venv is there and only `pip freeze` fails (its output once truncated the file
    before it failed)."""
    clone = _make_clone(tmp_path)
    before = (clone / "constraints.txt").read_text()
    assert "torch==2.13.0" in before
    (clone / ".venv" / "bin").mkdir(parents=True)
    _executable(clone / ".venv" / "bin" / "python", textwrap.dedent("""\
        #!/bin/sh
        [ "$1 $2 $3" = "-m pip freeze" ] && { echo "pip freeze: broken" >&2; exit 1; }
        exit 0
        """))
    (clone / ".venv" / ".installed").touch()  # installed after the pins: up to date
    result = _make(clone, "constraints")
    assert "pip freeze: broken" in result.stderr  # the freeze itself ran, and failed
    assert result.returncode != 0
    assert (clone / "constraints.txt").read_text() == before


def test_make_constraints_freezes_the_venv_as_it_is(tmp_path: Path) -> None:
    """After a dependency is raised past its pin, `pip install -c constraints.txt` refuses
    it (ResolutionImpossible): regenerating the pins must not go through it, only freeze
    what the developer installed."""
    clone = _make_clone(tmp_path)
    (clone / ".venv" / "bin").mkdir(parents=True)
    _executable(clone / ".venv" / "bin" / "python", textwrap.dedent("""\
        #!/bin/sh
        case "$1 $2 $3" in
          "-m pip install") echo "ResolutionImpossible" >&2; exit 1 ;;
          "-m pip freeze") echo "dummydep==2.0"; echo "torch==2.13.0"; exit 0 ;;
        esac
        exit 0
        """))
    (clone / "pyproject.toml").write_text((clone / "pyproject.toml").read_text() + "\n")
    result = _make(clone, "constraints")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (clone / "constraints.txt").read_text() == "dummydep==2.0\ntorch==2.13.0\n"


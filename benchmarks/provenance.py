"""Which code a benchmark's figures come from: the commit, and any uncommitted change to the
code or the models that the figures would then not describe. Shared by the benchmark
scripts (run as ``python benchmarks/<script>.py``, so this directory is on ``sys.path``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.rstrip()  # porcelain lines start with a meaningful space


def code_version() -> str:
    """The commit, and the operator and model files that differ from it (figures must say
    so)."""
    dirty = [line[3:] for line in
             git("status", "--porcelain", "--", "operator", "models").splitlines()]
    version = f"commit {git('rev-parse', '--short', 'HEAD').strip() or 'unknown'}"
    if dirty:
        version += f" plus uncommitted changes to {', '.join(sorted(dirty))}"
    return version

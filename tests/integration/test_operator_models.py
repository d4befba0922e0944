"""A model artifact replaced under a running operator, as a ConfigMap update or a volume
copy does it: the operator serves the new files at its next decision, without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from forescale.core.series import Series
from tests.integration.conftest import World

pytestmark = pytest.mark.integration


def _train(directory: Path) -> None:
    """A small LSTM at the operator's 60 s step, its horizon longer than the policy's
    window (lead 600 s, period 5 s, three periods of look-ahead: 11 steps)."""
    from forescale.core.forecast.lstm import train_lstm

    t = np.arange(2 * 1440)
    rate = 50.0 + 30.0 * np.sin(2 * np.pi * t / 1440)
    history = Series.from_array(np.random.default_rng(0).poisson(rate * 60) / 60.0,
                                start_seconds=0.0, step_seconds=60.0)
    train_lstm(history, epochs=1, window=30, horizon=15, hidden_size=8,
               same_time_yesterday=False).save(directory)


def test_a_replaced_artifact_is_served_without_a_restart(world: World) -> None:
    models = world.tmp / "models"
    artifact = models / "shop"
    artifact.mkdir(parents=True)
    _train(artifact)
    good = (artifact / "weights.pt").read_bytes()
    world.deployment("web", replicas=1)
    # Gates wide open: a one-epoch net is not accurate, the artifact's handling is the point.
    world.policy("web", "web", forecast={"models": ["lstm", "ma"], "historySeconds": 7200,
                                         "maxError": 100, "relativeMargin": 10,
                                         "lstm": {"modelRef": "shop"}})
    world.start_operator("operator-a", "--models-dir", str(models))
    world.wait(lambda: (p := world.get_policy("web")) and
               p.get("status", {}).get("servingModel") == "lstm", what="the LSTM serving")

    # Damaged in place: the next decision falls back, and says why.
    (artifact / "weights.pt").write_bytes(b"\x00not a state dict")
    corrupt = world.wait(lambda: (c := world.condition("web", "ModelReady")) and
                         c["reason"] == "ArtifactCorrupt" and c, what="ArtifactCorrupt")
    assert corrupt["status"] == "False"
    assert world.get_policy("web")["status"]["servingModel"] == "ma"  # type: ignore[index]

    # Repaired as a ConfigMap update does it: new files renamed over the old.
    (artifact / ".weights.pt.new").write_bytes(good)
    os.replace(artifact / ".weights.pt.new", artifact / "weights.pt")
    world.wait(lambda: any(e["reason"] == "ModelReloaded" for e in world.events()),
               what="a ModelReloaded event")
    world.wait(lambda: world.get_policy("web")["status"]["servingModel"] == "lstm",  # type: ignore[index]
               what="the LSTM serving again")
    assert len(world.operators) == 1 and world.operators[0].process.poll() is None

"""Run the protocol's policies in one world and make its headline comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from forescale.backtest.hpa import HPA_TARGETS, HPAPolicy
from forescale.backtest.known_traces import known_missing
from forescale.backtest.oracle import OraclePolicy
from forescale.backtest.world import (
    ExcludedInterval,
    Policy,
    PolicyRun,
    ProtocolParameters,
    World,
    build_world,
    simulate,
)
from forescale.core.errors import InvalidInputError
from forescale.core.spec import PolicySpec
from forescale.trace import load_trace

if TYPE_CHECKING:  # the forecasting stack is imported only when forescale is replayed
    from forescale.backtest.forescale_policy import ForescalePolicy

POLICY_NAMES = ("oracle", "hpa", "forescale")


class Progress(Protocol):
    """Where a long run reports how far it is (the CLI draws a bar; tests pass nothing)."""

    def phase(self, description: str, total: int) -> None: ...

    def advance(self, steps: int) -> None: ...


@dataclass(frozen=True)
class BacktestOptions:
    #: Which policies to replay; the oracle always runs, every ratio is to it.
    policies: tuple[str, ...] = POLICY_NAMES
    hpa_targets: tuple[float, ...] = HPA_TARGETS
    #: forescale's ScalingPolicy; None: the one matching the world.
    policy_spec: PolicySpec | None = None
    lstm_epochs: int = 3

    def __post_init__(self) -> None:
        for name in self.policies:
            if name not in POLICY_NAMES:
                raise InvalidInputError(f"unknown policy {name!r} "
                                        f"(known: {', '.join(POLICY_NAMES)}, all)")
        if not self.hpa_targets:
            raise InvalidInputError("the HPA sweep needs at least one target")
        if self.lstm_epochs < 0:
            raise InvalidInputError(f"LSTM epochs must be >= 0, got {self.lstm_epochs}")


@dataclass(frozen=True)
class EqualSLO:
    """forescale's cost against the cheapest HPA target at least as good on violations."""

    matched: bool
    forescale_cost_pod_hours: float
    forescale_violation_rate: float
    #: The cheapest matching target; without a match, the target with the fewest violations.
    hpa_target: float
    hpa_cost_pod_hours: float
    hpa_violation_rate: float

    @property
    def cost_ratio(self) -> float | None:
        """forescale cost / matched HPA cost; None when the HPA cannot match."""
        return self.forescale_cost_pod_hours / self.hpa_cost_pod_hours if self.matched else None

    def describe(self) -> str:
        if self.matched:
            return (f"{self.cost_ratio:.3f} x HPA@{self.hpa_target:.2f} "
                    f"({self.hpa_cost_pod_hours:,.1f} pod-h, "
                    f"{self.hpa_violation_rate:.2%} violations)")
        return (f"HPA cannot match (lowest violation rate {self.hpa_violation_rate:.2%} "
                f"at target {self.hpa_target:.2f}, {self.hpa_cost_pod_hours:,.1f} pod-h)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "summary": self.describe(),
            "cost_ratio": self.cost_ratio,
            "forescale_cost_pod_hours": self.forescale_cost_pod_hours,
            "forescale_violation_rate": self.forescale_violation_rate,
            "hpa_target": self.hpa_target,
            "hpa_cost_pod_hours": self.hpa_cost_pod_hours,
            "hpa_violation_rate": self.hpa_violation_rate,
        }


def equal_slo(forescale: PolicyRun, hpa: Sequence[tuple[float, PolicyRun]]) -> EqualSLO:
    """BENCHMARK.md "Equal-SLO cost". Violations are compared as counts over the same scored
    steps, so a rate that prints equal also compares equal."""
    if not hpa:
        raise ValueError("equal-SLO comparison needs at least one HPA run")
    matching = [(run.cost_pod_hours, run.violations, target, run) for target, run in hpa
                if run.violations <= forescale.violations]
    if matching:
        _, _, target, run = min(matching, key=lambda m: (m[0], m[1], -m[2]))
        found = True
    else:
        _, _, target, run = min(((run.violations, run.cost_pod_hours, target, run)
                                 for target, run in hpa), key=lambda m: (m[0], m[1], -m[2]))
        found = False
    return EqualSLO(matched=found, forescale_cost_pod_hours=forescale.cost_pod_hours,
                    forescale_violation_rate=forescale.violation_rate, hpa_target=target,
                    hpa_cost_pod_hours=run.cost_pod_hours,
                    hpa_violation_rate=run.violation_rate)


@dataclass
class BacktestResult:
    world: World
    trace_name: str
    oracle: PolicyRun
    hpa: list[tuple[float, PolicyRun]] = field(default_factory=list)
    forescale: PolicyRun | None = None
    #: The forescale policy after the run: its forecasts and reasons, for plots.
    forescale_policy: ForescalePolicy | None = None
    training_seconds: float = 0.0

    @property
    def equal_slo(self) -> EqualSLO | None:
        if self.forescale is None or not self.hpa:
            return None
        return equal_slo(self.forescale, self.hpa)

    @property
    def distance_to_limit(self) -> float | None:
        if self.forescale is None:
            return None
        return self.forescale.cost_pod_hours / self.oracle.cost_pod_hours

    def best_hpa(self) -> tuple[float, PolicyRun] | None:
        """The HPA run the headline compares with (see :func:`equal_slo`)."""
        if not self.hpa:
            return None
        comparison = self.equal_slo
        if comparison is None:
            comparison = equal_slo(self.oracle, self.hpa)
        return next((t, r) for t, r in self.hpa if t == comparison.hpa_target)

    def runs(self) -> list[tuple[str, float | None, PolicyRun]]:
        out: list[tuple[str, float | None, PolicyRun]] = [("oracle", None, self.oracle)]
        out += [("hpa", target, run) for target, run in self.hpa]
        if self.forescale is not None:
            out.append(("forescale", None, self.forescale))
        return out

    def run_summary(self, name: str, target: float | None, run: PolicyRun) -> dict[str, Any]:
        summary: dict[str, Any] = {"name": name}
        if target is not None:
            summary["target"] = target
        summary.update({
            "cost_pod_hours": run.cost_pod_hours,
            "violation_rate": run.violation_rate,
            "violating_steps": run.violations,
            "scored_steps": int(run.scored.sum()),
            "cost_ratio_to_oracle": run.cost_pod_hours / self.oracle.cost_pod_hours,
            "scaling_actions": run.scaling_actions,
            "wall_seconds": run.wall_seconds,
        })
        if name == "forescale":
            summary["lstm_training_seconds"] = self.training_seconds
        summary.update(run.details)
        return summary

    def to_dict(self) -> dict[str, Any]:
        comparison = self.equal_slo
        return {
            "protocol": self.world.to_dict()["protocol"],
            "trace": self.trace_name,
            "parameters": self.world.to_dict(),
            "policies": [self.run_summary(n, t, r) for n, t, r in self.runs()],
            "equal_slo": None if comparison is None else comparison.to_dict(),
            "distance_to_limit": self.distance_to_limit,
        }


def world_from_trace(path: str | Path, params: ProtocolParameters | None = None, *,
                     excluded: Sequence[ExcludedInterval] = ()) -> World:
    """Load a trace CSV and build its world; the README-listed missing intervals of the
    shared traces are excluded on top of ``excluded``."""
    trace = load_trace(path)
    return build_world(trace.rates, params, excluded=(*known_missing(path), *excluded),
                       name=f"trace {Path(path).name}")


def run_backtest(world: World, options: BacktestOptions | None = None, *,
                 trace_name: str = "trace", progress: Progress | None = None) -> BacktestResult:
    """Replay the chosen policies in ``world``; the oracle always runs (the yardstick)."""
    options = options or BacktestOptions()
    steps = len(world) - world.first_step

    def run(policy: Policy, label: str) -> PolicyRun:
        if progress is not None:
            progress.phase(label, steps)
        return simulate(world, policy,
                        progress=None if progress is None else progress.advance)

    result = BacktestResult(world=world, trace_name=trace_name,
                            oracle=run(OraclePolicy(world), "oracle"))
    if "hpa" in options.policies:
        for target in options.hpa_targets:
            policy = HPAPolicy(target, service_rate=world.params.service_rate,
                               step_seconds=world.step_seconds)
            hpa_run = run(policy, f"hpa {target:.2f}")
            result.hpa.append((target, hpa_run))
    if "forescale" in options.policies:
        from forescale.backtest.forescale_policy import build_forescale_policy

        def epochs(done: int, total: int) -> None:
            if progress is None:
                return
            if done == 1:
                progress.phase("training LSTM", total)
            progress.advance(1)

        fs_policy, result.training_seconds = build_forescale_policy(
            world, options.policy_spec, lstm_epochs=options.lstm_epochs, progress=epochs)
        with fs_policy.replay_scope():
            fs_run = run(fs_policy, "forescale")
        # Its wall time includes the training, as the protocol's per-policy wall time does.
        result.forescale = replace(fs_run, details=fs_policy.details(),
                                   wall_seconds=fs_run.wall_seconds + result.training_seconds)
        result.forescale_policy = fs_policy
    return result

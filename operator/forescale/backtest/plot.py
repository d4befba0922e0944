"""The backtest's picture: traffic and forecast above, each policy's ready pods below, with
the violating steps marked; the whole scored period on the left, one day on the right.

A scored period is weeks of one-minute steps, too dense to judge a policy by eye, so the
right-hand column zooms into the day where forescale violated most (or, without
violations, the day of the highest peak).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from forescale.backtest.runner import BacktestResult
from forescale.backtest.world import BoolArray, PolicyRun
from forescale.core.series import DAY_SECONDS, FloatArray

_COLOURS = {"oracle": "#222222", "hpa": "#e07b00", "forescale": "#1f5fbf"}


def zoom_window(result: BacktestResult) -> tuple[int, int]:
    """[first, last) trace steps of the day to zoom into."""
    world = result.world
    day = max(1, round(DAY_SECONDS / world.step_seconds))
    lo, n = world.warmup_steps, len(world)
    if n - lo <= day:
        return lo, n
    focus = result.forescale or (result.best_hpa() or (None, None))[1]
    score: FloatArray = world.underlying[lo:].astype(np.float64)
    if focus is not None and focus.violations:
        v = (focus.violating & focus.scored)[lo - focus.first_step:].astype(np.float64)
        counts = np.convolve(v, np.ones(day), mode="valid")
        start = lo + int(np.argmax(counts))
    else:
        peak = lo + int(np.argmax(score))
        start = min(max(peak - day // 2, lo), n - day)
    return start, start + day


def _dates(result: BacktestResult, first: int, last: int) -> npt.NDArray[np.object_]:
    w = result.world
    seconds = w.start_seconds + w.step_seconds * np.arange(first, last)
    return np.array([datetime.fromtimestamp(s, tz=UTC) for s in seconds])


def render_png(result: BacktestResult, *, dpi: int = 110) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    world = result.world
    policies: list[tuple[str, str, PolicyRun]] = [("oracle", "oracle", result.oracle)]
    best = result.best_hpa()
    if best is not None:
        policies.append(("hpa", f"HPA @ {best[0]:.2f}", best[1]))
    if result.forescale is not None:
        policies.append(("forescale", "forescale", result.forescale))
    fs = result.forescale_policy

    spans = [(world.warmup_steps, len(world))]
    zoom = zoom_window(result)
    if zoom != spans[0]:  # a short replay is its own zoom
        spans.append(zoom)
    fig, axes = plt.subplots(2, len(spans), figsize=(15, 8), sharex="col", squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1][:len(spans)]})
    for col, (first, last) in enumerate(spans):
        x = _dates(result, first, last)
        top, bottom = axes[0][col], axes[1][col]
        top.plot(x, world.observed[first:last], color="#bbbbbb", lw=0.5,
                 label="observed λ (req/s)")
        if fs is not None:
            top.fill_between(x, fs.forecast_lower[first:last], fs.forecast_upper[first:last],
                             color=_COLOURS["forescale"], alpha=0.18, lw=0,
                             label=f"forecast band ({fs.spec.forecast.confidence:.0%})")
            top.plot(x, fs.forecast_mean[first:last], color=_COLOURS["forescale"],
                     lw=0.7 if col else 0.4,
                     label=f"forecast made {world.startup_steps} steps ahead")
        # λ* last, on top: over weeks of steps the forecast would hide it otherwise.
        top.plot(x, world.underlying[first:last], color="#222222", lw=0.7 if col else 0.5,
                 label="λ* (scored against)")
        top.set_ylabel("arrival rate (req/s)")
        top.set_ylim(bottom=0)

        # Violating steps as ticks in a strip below zero, where no pod count is drawn.
        marks = blended_transform_factory(bottom.transData, bottom.transAxes)
        strip = 0.04 * (len(policies) - 1) + 0.02
        for i, (kind, label, run) in enumerate(policies):
            sl = slice(first - run.first_step, last - run.first_step)
            bottom.step(x, run.ready[sl], where="post", color=_COLOURS[kind],
                        lw=0.6 if kind == "oracle" else 0.8,
                        label=f"{label}: {run.violation_rate:.2%} violating, "
                              f"{run.cost_pod_hours / result.oracle.cost_pod_hours:.2f} x oracle"
                        if kind != "oracle" else "oracle (ready pods)")
            bad: BoolArray = run.violating[sl] & run.scored[sl]
            if kind != "oracle" and bad.any():
                bottom.plot(x[bad], np.full(int(bad.sum()), strip - 0.04 * i + 0.02), "|",
                            ms=7, mew=0.8, color=_COLOURS[kind], transform=marks)
        bottom.set_ylabel("ready pods (| = violating step)")
        top_y = bottom.get_ylim()[1]
        # Put y = 0 just above the strip: the strip takes the lowest ``strip`` of the axes.
        bottom.set_ylim(-top_y * strip / (1 - strip), top_y)
        locator = mdates.AutoDateLocator(  # type: ignore[no-untyped-call]
            minticks=3, maxticks=10 if col == 0 else 6)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(
            mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        for ax in (top, bottom):
            ax.grid(alpha=0.25, lw=0.5)
            ax.margins(x=0)
    axes[0][0].set_title(f"{result.trace_name}: scored period (UTC)", loc="left")
    if len(spans) > 1:
        axes[0][1].set_title("zoom: one day", loc="left")
    axes[0][0].legend(loc="upper left", fontsize=8, ncol=2)
    axes[1][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()

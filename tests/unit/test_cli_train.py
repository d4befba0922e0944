"""``forescale train`` through the CLI entry point, on a small trace CSV."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from forescale.cli import main
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.lstm import YESTERDAY_FEATURE, LSTMConfig, LSTMForecaster

# One thread: the machine is shared, and tiny ops gain nothing from more.
torch.set_num_threads(1)

MONDAY = 1_700_438_400  # 2023-11-20T00:00:00Z
#: Small and quick: one epoch of this trains in well under a second.
FAST = ["--epochs", "1", "--window", "20", "--horizon", "5m", "--hidden", "8"]


def write_trace(path: Path, *, minutes: int = 2 * 1440, seed: int = 5) -> Path:
    t = MONDAY + 60 * np.arange(minutes)
    rate = 30.0 * (1.0 + 0.5 * np.sin(2 * np.pi * (t % 86400) / 86400))
    counts = np.random.default_rng(seed).poisson(rate)
    lines = ["timestamp,requests"] + [
        f"{np.datetime_as_string(np.datetime64(int(s), 's'))}Z,{c}"
        for s, c in zip(t, counts, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_trace(tmp_path_factory.mktemp("trace") / "small.csv")


def test_train_writes_artifact_card_and_summary(trace: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models" / "small"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "metadata.json",
                                                     "weights.pt"]
    assert "validation WAPE" in captured.out and "seasonal naive" in captured.out
    assert "training lstm" in captured.err  # the progress bar, on stderr
    model = LSTMForecaster.load(out)
    assert (model.window, model.horizon) == (20, 5)
    card = (out / "MODEL_CARD.md").read_text()
    assert "`small`" in card and "Reproduce with: `forescale train --trace" in card
    assert "--threads" not in card  # the default, 1


def test_the_reproduce_command_keeps_the_thread_count(trace: Path, tmp_path: Path) -> None:
    """The card says the weights depend on torch's thread count: its command gives it."""
    out = tmp_path / "t2"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST,
                 "--threads", "2"]) == 0
    assert "--threads 2`" in (out / "MODEL_CARD.md").read_text()


def test_same_time_yesterday_option(trace: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "y"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST,
                 "--same-time-yesterday"]) == 0
    model = LSTMForecaster.load(out)
    assert model.metadata.features[-1] == YESTERDAY_FEATURE
    assert model.min_history == 20 + 1440 - 5 + 2
    card = (out / "MODEL_CARD.md").read_text()
    assert f"`{YESTERDAY_FEATURE}` is the rate one day before" in card
    assert "--same-time-yesterday`" in card  # in the reproduce command
    # One day of data cannot feed a one-day lag and still leave windows to train on.
    one_day = write_trace(tmp_path / "day.csv", minutes=1440)
    capsys.readouterr()
    assert main(["train", "--trace", str(one_day), "--out", str(tmp_path / "z"), *FAST,
                 "--same-time-yesterday"]) == 2
    assert "needs at least" in capsys.readouterr().err


def test_until_limits_the_training_range(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST,
                 "--until", "2023-11-21T12:00:00Z"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["end"] == "2023-11-21T12:00:00Z"
    assert meta["training"]["points"] == 36 * 60


def test_existing_model_is_not_overwritten_without_force(
        trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "weights.pt").write_bytes(b"precious")
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert (out / "weights.pt").read_bytes() == b"precious"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST, "--force"]) == 0
    LSTMForecaster.load(out)


def test_an_empty_out_directory_is_fine(trace: Path, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert main(["train", "--trace", str(trace), "--out", str(tmp_path / "m"), *FAST]) == 0


@pytest.mark.parametrize(("content", "message"), [
    ("time,count\n1,2\n2,3\n", "header must be"),
    ("timestamp,requests\n2023-11-20T00:00:00Z,5\n2023-11-20T00:01:00Z,-1\n",
     "negative request count"),
])
def test_bad_trace_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    assert main(["train", "--trace", str(bad), "--out", str(tmp_path / "m"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "m").exists()


def test_too_short_trace_is_one_line_exit_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    short = write_trace(tmp_path / "short.csv", minutes=90)
    assert main(["train", "--trace", str(short), "--out", str(tmp_path / "m"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 90 samples" in err and "needs at least" in err


@pytest.mark.parametrize("horizon", ["90s", "0", "15", "soon"])
def test_bad_horizon_is_exit_2(trace: Path, tmp_path: Path, horizon: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--trace", str(trace), "--out", str(tmp_path / "m"), "--epochs", "1",
            "--horizon", horizon]
    assert main(args) == 2
    assert "--horizon" in capsys.readouterr().err


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before refusing --out")

    monkeypatch.setattr(LSTMForecaster, "fit", fit)


@pytest.mark.parametrize(("out", "message"), [
    ("file/m", "file is not a directory"),
    ("file/a/b", "file is not a directory"),
    ("file", "exists and is not a directory"),
    ("x" * 300, "File name too long"),
])
def test_an_out_that_cannot_be_written_is_refused_before_training(
        trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, out: str, message: str) -> None:
    """A parent that is a regular file once failed after training, with a traceback."""
    _no_training(monkeypatch)
    (tmp_path / "file").write_text("x")
    assert main(["train", "--trace", str(trace), "--out", str(tmp_path / out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("forescale: error: --out")


def test_a_save_that_fails_after_training_is_one_line(trace: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def save(self: LSTMForecaster, path: object, **_: object) -> Path:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(LSTMForecaster, "save", save)
    out = tmp_path / "m"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"\nforescale: error: cannot write --out {out}: Read-only file system\n")
    assert "Traceback" not in err


def test_an_os_error_no_command_expected_is_one_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from forescale.cli import train_cmd

    def load_trace(path: object) -> None:
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(train_cmd, "load_trace", load_trace)
    assert main(["train", "--trace", "t.csv", "--out", str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err == "forescale: error: t.csv: Input/output error\n"


def test_a_failed_replacement_leaves_the_old_artifact_card_and_all(
        trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The card was written after the weights and metadata were swapped in: a full disk
    then said "cannot write" while a running operator already served the new weights,
    described by the old card."""
    out = tmp_path / "m"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST, "--seed", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write_text = Path.write_text

    def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if self.name == ".MODEL_CARD.md.tmp":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    capsys.readouterr()
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST, "--seed", "2",
                 "--force"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no leftovers either


def test_a_replacement_swaps_the_card_with_the_weights(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST, "--seed", "1"]) == 0
    assert main(["train", "--trace", str(trace), "--out", str(out), *FAST, "--seed", "2",
                 "--force"]) == 0
    assert "--seed 2`" in (out / "MODEL_CARD.md").read_text()
    assert LSTMForecaster.load(out).metadata.seed == 2
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "metadata.json",
                                                     "weights.pt"]


def test_a_seed_torch_cannot_take_is_exit_2(trace: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Past 2**64 - 1 torch.manual_seed raised an overflow: a traceback."""
    assert main(["train", "--trace", str(trace), "--out", str(tmp_path / "m"), *FAST,
                 "--seed", str(2**64)]) == 2
    assert "--seed" in capsys.readouterr().err
    with pytest.raises(InvalidInputError, match="seed"):
        LSTMConfig(seed=2**64)


def test_a_window_too_large_to_hold_is_one_line_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every window is held at once for the scale and the validation: --window 100000 on
    200,000 samples asked numpy for 56 GB (a MemoryError traceback)."""
    big = write_trace(tmp_path / "big.csv", minutes=200_000)
    code = main(["train", "--trace", str(big), "--out", str(tmp_path / "m"), "--epochs", "1",
                 "--window", "100000", "--horizon", "1m", "--hidden", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--window" in err and "at most 1,000" in err
    assert "training lstm" not in err  # refused before the progress bar
    assert not (tmp_path / "m").exists()


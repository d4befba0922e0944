"""A probe the integration tests load into a ``forescale run`` process: every outcome of
:meth:`LeaseLock.ensure` (acquired, renewed, took over, refused, or the error it raised)
is appended, one JSON object a line, to ``<directory>/<identity>.jsonl``. It changes
nothing the operator does: the real ``ensure`` runs and its answer is returned as is.

The operator logs nothing when it is refused a Lease (a standby is silent), so without
this a test cannot tell a standby that contended from one that never ran. The tests load
it through a ``sitecustomize`` on the operator's ``PYTHONPATH``
(:func:`sitecustomize_source`), so the operator is the real ``forescale`` entry point
started by ``World.start_operator``. This module imports only the standard library at
import time (it runs before the operator's own code).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


def install(directory: str) -> None:
    """Wrap ``LeaseLock.ensure`` in this process (idempotent)."""
    from forescale.threads import limit_native_threads

    limit_native_threads()  # as the CLI does, before anything heavy is imported
    from forescale.controller.lease import LeaseLock

    if getattr(LeaseLock.ensure, "__wrapped_by_lease_probe__", False):
        return
    original = LeaseLock.ensure
    out = Path(directory)
    lock = threading.Lock()

    def record(identity: str, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with lock, (out / f"{identity}.jsonl").open("a") as f:
            f.write(line)

    def ensure(self: LeaseLock, namespace: str, name: str, **kwargs: Any) -> Any:
        began = time.time()
        entry: dict[str, Any] = {"identity": self.identity, "namespace": namespace,
                                 "name": name, "policy": kwargs.get("policy"),
                                 "now": kwargs.get("now"), "began": began}
        try:
            state = original(self, namespace, name, **kwargs)
        except BaseException as exc:
            record(self.identity, {**entry, "finished": time.time(),
                                   "error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        record(self.identity, {**entry, "finished": time.time(), "held": state.held,
                               "holder": state.holder, "message": state.message})
        return state

    ensure.__wrapped_by_lease_probe__ = True  # type: ignore[attr-defined]
    LeaseLock.ensure = ensure  # type: ignore[method-assign]


def sitecustomize_source(directory: Path) -> str:
    """A ``sitecustomize.py`` that loads this file (by path: the operator's ``sys.path``
    stays its own) and installs the probe, writing to ``directory``."""
    return (
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location("
        f"'forescale_test_lease_probe', {str(Path(__file__).resolve())!r})\n"
        "_probe = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_probe)\n"
        f"_probe.install({str(directory)!r})\n")

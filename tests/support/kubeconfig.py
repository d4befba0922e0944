"""Kubeconfig files that point a client (and its identity) at the API emulator.

The emulator authenticates nobody: the bearer token *is* the identity. Both clients an
operator uses send it the same way, which is why the token was chosen over the other
channels (measured on kubernetes 37 and kopf 1.45):

* the official ``kubernetes`` client turns ``users[].user.token`` into
  ``Authorization: Bearer <token>`` on every request;
* kopf's ``login_via_client`` reads the same kubeconfig through the official client and
  sends the same header from its own aiohttp session.

The ``User-Agent`` cannot serve: it is per library (``OpenAPI-Generator/37.0.2/python``,
``kopf/1.45.2``), not per process, and a kubeconfig cannot set it. The python client does
not implement the kubeconfig ``as:`` field (``Impersonate-User``), although the emulator
honours that header when some other client sends it.

JSON is valid YAML, so the file is written as JSON: no YAML dependency, no quoting rules.
"""

from __future__ import annotations

import json
import os
import pathlib
import re

# Header-safe and readable in logs; anything else in a bearer token would need escaping.
_IDENTITY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]*")


def validate_identity(identity: str) -> str:
    """Return ``identity`` if it can travel as a bearer token unchanged, else raise."""
    if not _IDENTITY_PATTERN.fullmatch(identity):
        raise ValueError(
            f"Identity {identity!r} must match {_IDENTITY_PATTERN.pattern}: it is sent"
            " verbatim as a bearer token."
        )
    return identity


def kubeconfig_document(
    *, server: str, identity: str, namespace: str = "default"
) -> dict[str, object]:
    """Build the kubeconfig for one client identity talking to ``server``."""
    validate_identity(identity)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": identity, "user": {"token": identity}}],
        "contexts": [
            {
                "name": f"emulator-{identity}",
                "context": {"cluster": "emulator", "user": identity, "namespace": namespace},
            }
        ],
        "current-context": f"emulator-{identity}",
    }


def write_kubeconfig(
    path: str | os.PathLike[str],
    *,
    server: str,
    identity: str,
    namespace: str = "default",
) -> pathlib.Path:
    """Write a kubeconfig for ``identity`` at ``path`` (parents created) and return the path."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = kubeconfig_document(server=server, identity=identity, namespace=namespace)
    # Written whole and renamed, so a process starting concurrently never reads half a file.
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    partial.replace(target)
    return target

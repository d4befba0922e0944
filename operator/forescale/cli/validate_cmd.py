"""``forescale validate FILE…``: check ScalingPolicy manifests as the API server would.

For CI pipelines: every ScalingPolicy document in the files is checked against the CRD's
``spec`` schema (types, bounds, enums, patterns, required fields), then, with the CRD's
defaults applied, against its CEL rules (``x-kubernetes-validations``, evaluated with
``cel-python``), then against the core's own checks (what the operator would refuse).
Documents of other kinds in the same files (a Deployment next to its policy) are skipped;
a document in the forescale.dev group whose kind is not ScalingPolicy is an error. Files
are read within the bounds ``backtest --policy-file`` applies (64 KiB, 32 levels, 10,000
nodes, no YAML aliases).

Exit codes: 0 when every policy is valid, 2 when one is not (or a file cannot be read or
parsed, or holds no ScalingPolicy). Invalid documents are one line each on stderr; ``--json``
prints one JSON object with every document's result on stdout instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from forescale.cli import crd_rules
from forescale.cli.options import is_namespace_name, is_object_name
from forescale.core.errors import InvalidInputError
from forescale.policy import (
    API_VERSION,
    KIND,
    SPEC_SCHEMA,
    is_policy_document,
    parse_policy_documents,
    policy_spec_from_manifest,
    read_policy_file,
    validate,
)


@dataclass
class Result:
    file: str
    #: The document's index in the file; None for a problem of the whole file.
    index: int | None
    name: str | None
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def where(self) -> str:
        if self.index is None:
            return self.file
        # A name is shown as it is only when it cannot break the one line (or pass for
        # another): invalid ones are quoted with their escapes, and cut.
        shown = self.name if self.name and is_object_name(self.name) else _shown(self.name)
        name = f" {shown}" if self.name else ""
        return f"{self.file}[{self.index}] {KIND}{name}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "index": self.index, "name": self.name,
                "valid": self.valid, "errors": self.errors}


def _name_problems(meta: Mapping[str, Any]) -> list[str]:
    """metadata.name and metadata.namespace as the API server checks them."""
    problems = []
    name = meta["name"]
    if not is_object_name(name):
        problems.append(f"metadata.name must be a DNS-1123 subdomain (at most 253 lower-case "
                        f"letters, digits, '-' and '.', starting and ending with a letter "
                        f"or digit), got {_shown(name)}")
    namespace = meta.get("namespace")
    if namespace is not None and not is_namespace_name(namespace):
        problems.append(f"metadata.namespace must be a DNS-1123 label (at most 63 lower-case "
                        f"letters, digits and '-', starting and ending with a letter or "
                        f"digit), got {_shown(namespace)}")
    return problems


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def check_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Every problem of one ScalingPolicy manifest; empty when the API server and the
    operator would both accept it."""
    meta = manifest.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) \
            or not meta.get("name"):
        return ["metadata.name is required"]
    problems = _name_problems(meta)
    if problems:
        return problems
    if manifest.get("apiVersion") != API_VERSION:
        return [f"apiVersion must be {API_VERSION}, got {manifest.get('apiVersion')!r}"]
    if manifest.get("kind") != KIND:
        return [f"kind must be {KIND}, got {manifest.get('kind')!r}"]
    if "spec" not in manifest:
        return ["spec is required"]
    try:
        validate(manifest["spec"], SPEC_SCHEMA, "spec")
    except InvalidInputError as exc:
        return [str(exc)]  # CEL over a structurally wrong object would only add noise
    spec = crd_rules.with_defaults(manifest["spec"], SPEC_SCHEMA)
    errors = crd_rules.violations(spec, SPEC_SCHEMA)
    if errors:
        return errors
    try:
        policy_spec_from_manifest(manifest)
    except InvalidInputError as exc:
        return [str(exc)]
    return []


def check_file(path: Path) -> list[Result]:
    """The results of a file's ScalingPolicy documents, read and parsed as ``backtest
    --policy-file`` reads a policy (the same bounds: size, depth, nodes, no aliases).
    A file that cannot be read or parsed, or holds no ScalingPolicy, is one failed result
    (so ``--json`` reports it too, and the other files are still checked)."""
    try:
        documents = parse_policy_documents(read_policy_file(path))
    except InvalidInputError as exc:
        # read_policy_file names the file; Result.where names it once already.
        message = str(exc).removeprefix(f"{path}: ")
        return [Result(str(path), None, None, [message])]
    results = []
    for i, doc in enumerate(documents):
        if not is_policy_document(doc):
            continue
        if not isinstance(doc, Mapping):
            results.append(Result(str(path), i, None,
                                  [f"a document must be a mapping, got {type(doc).__name__}"]))
            continue
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        results.append(Result(str(path), i, name if isinstance(name, str) else None,
                              check_manifest(doc)))
    if not results:
        results.append(Result(str(path), None, None, [f"no {KIND} document"]))
    return results


@click.command(name="validate")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print every document's result as one JSON object on stdout.")
def command(files: tuple[Path, ...], as_json: bool) -> None:
    """Check ScalingPolicy files against the CRD's schema and CEL rules (exit 2: invalid)."""
    results: list[Result] = []
    for path in files:
        results += check_file(path)
    invalid = [r for r in results if not r.valid]
    if as_json:
        click.echo(json.dumps({"valid": not invalid,
                               "documents": [r.to_dict() for r in results]}))
    else:
        for r in results:
            if r.valid:
                click.echo(f"{r.where}: valid")
            else:
                click.echo(f"{r.where}: {'; '.join(r.errors)}", err=True)
    if invalid:
        raise click.exceptions.Exit(2)

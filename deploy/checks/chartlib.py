"""Shared helpers of the deploy checks: render the Helm chart with helm_python (Helm's own Go
SDK), split the output into Kubernetes objects, and validate them against the Kubernetes JSON
schemas bundled with kubernetes-validate (strict variant: unknown fields are errors).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ferrocast"
CHECKS = ROOT / "deploy" / "checks"
VALUES_DIR = CHECKS / "values"
KUBE_VERSION = "1.30.0"
RELEASE = "rt"
NAMESPACE = "realtime"

# Value variants rendered and validated: name -> values file (None: chart defaults).
VARIANTS: dict[str, Path | None] = {
    "default": None,
    "full": VALUES_DIR / "full.yaml",
    "existing-secret": VALUES_DIR / "existing-secret.yaml",
}

# Custom resources: no schema in the Kubernetes bundle.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def load_values(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any] | None) -> dict[str, str]:
    """Renders the chart like `helm template` for an install; returns {template: text}."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@functools.lru_cache(maxsize=None)
def render_variant(name: str) -> tuple[dict[str, str], tuple[dict[str, Any], ...]]:
    """Rendered templates and the parsed objects of one variant (cached)."""
    out = render(load_values(VARIANTS[name]))
    return out, tuple(objects(out))


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of the rendered templates (NOTES.txt excluded), each tagged
    with the template it came from under the key '__template'."""
    objs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template"] = template
                objs.append(doc)
    return objs


def _schema_dir() -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    d = base / f"v{KUBE_VERSION}-local-strict"
    if not d.is_dir():
        raise RuntimeError(f"kubernetes-validate has no strict schemas for {KUBE_VERSION} in {base}")
    return d


@functools.lru_cache(maxsize=None)
def _registry():
    from referencing import Registry, Resource

    defs = json.loads((_schema_dir() / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


def schema_file(api_version: str, kind: str) -> Path:
    # apps/v1 -> apps-v1, networking.k8s.io/v1 -> networking-v1, v1 -> v1
    group, _, version = api_version.rpartition("/")
    group = group.split(".")[0]
    suffix = f"{group}-{version}" if group else version
    return _schema_dir() / f"{kind.lower()}-{suffix}.json"


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Errors of one object against the strict Kubernetes schema (all of them, not the first).
    Raises LookupError for a kind without a bundled schema."""
    import jsonschema

    path = schema_file(obj["apiVersion"], obj["kind"])
    if not path.exists():
        raise LookupError(f"no Kubernetes {KUBE_VERSION} schema for {obj['apiVersion']} {obj['kind']}")
    schema = json.loads(path.read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    body = {k: v for k, v in obj.items() if k != "__template"}
    errors = []
    for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in e.absolute_path) or "(root)"
        errors.append(f"{where}: {e.message}")
    return errors


def values_schema_errors(values: dict[str, Any]) -> list[str]:
    """Errors of a user values file against values.schema.json, after merging it over the
    chart defaults the way Helm does (maps merge, null deletes a key)."""
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    merged = _coalesce(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    v = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in v.iter_errors(merged)]


def _coalesce(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _coalesce(base.get(k), v)
        return out
    return over


def find_binary() -> str | None:
    """A ferrocast binary to run `checkconfig` with: $DEPLOY_CHECKS_BIN, target/release, target/debug."""
    env = os.environ.get("DEPLOY_CHECKS_BIN")
    if env == "none":
        return None
    if env:
        env = os.path.abspath(env)
        return env if os.access(env, os.X_OK) else None
    for p in (ROOT / "target" / "release" / "ferrocast", ROOT / "target" / "debug" / "ferrocast"):
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which("ferrocast")

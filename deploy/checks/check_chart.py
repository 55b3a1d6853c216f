#!/usr/bin/env python3
"""Helm chart checks without a cluster:

1. `helm lint --strict` (Helm's Go SDK through helm_python) with the default values and every
   variant in deploy/checks/values/.
2. Render every variant (`helm template` for an install) and validate every object strictly
   against the Kubernetes JSON schemas of 1.30 bundled with kubernetes-validate, reporting
   every error. Custom resources (ServiceMonitor) have no schema there and are skipped, by
   name, in the output.
3. Every file in deploy/checks/values/bad/ must be refused: Helm must fail to render it, and
   the files marked `# expect: schema` must also fail values.schema.json on their own.

Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import sys

import chartlib as cl

failures: list[str] = []


def report(ok: bool, what: str, detail: str = "") -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}{(': ' + detail) if detail else ''}")
    if not ok:
        failures.append(what)


def lint() -> None:
    import helm_python

    print(f"helm lint --strict (kube {cl.KUBE_VERSION}, Helm SDK {helm_python.helm_sdk_version()})")
    for name, path in cl.VARIANTS.items():
        try:
            res = helm_python.lint(
                str(cl.CHART), cl.load_values(path), strict=True, namespace=cl.NAMESPACE,
                kube_version=f"v{cl.KUBE_VERSION}",
            )
        except helm_python.HelmError as e:
            report(False, f"lint [{name}]", str(e))
            continue
        # Severity: 0 unknown, 1 info, 2 warning, 3 error. Strict: warnings fail too.
        bad = [m for m in res.get("messages", []) if m.get("severity", 0) >= 2] + [
            {"error": e} for e in res.get("errors") or []
        ]
        infos = [m["error"] for m in res.get("messages", []) if m.get("severity", 0) < 2]
        report(not bad, f"lint [{name}]", "; ".join(str(m.get("error")) for m in bad)
               or (f"info only: {'; '.join(infos)}" if infos else ""))


def schemas() -> None:
    print(f"Kubernetes {cl.KUBE_VERSION} strict JSON schemas (kubernetes-validate bundle, jsonschema)")
    for name in cl.VARIANTS:
        try:
            _, objs = cl.render_variant(name)
        except Exception as e:  # noqa: BLE001 - report any render failure
            report(False, f"render [{name}]", str(e))
            continue
        kinds = []
        for obj in objs:
            label = f"{obj['kind']}/{obj['metadata']['name']}"
            if (obj["apiVersion"], obj["kind"]) in cl.CRD_KINDS:
                print(f"  skip {label} [{name}]: custom resource {obj['apiVersion']}, no schema in the Kubernetes bundle")
                continue
            try:
                errors = cl.validate_object(obj)
            except LookupError as e:
                report(False, f"{label} [{name}]", str(e))
                continue
            if errors:
                report(False, f"{label} [{name}]", "; ".join(errors))
            else:
                kinds.append(label)
        report(bool(kinds), f"render [{name}]: {len(kinds)} objects valid", ", ".join(kinds))


def bad_values() -> None:
    import helm_python

    print("values that must be refused (deploy/checks/values/bad/)")
    files = sorted((cl.VALUES_DIR / "bad").glob("*.yaml"))
    if not files:
        report(False, "bad values", "no files")
    for path in files:
        expect = "template"
        first = path.read_text().splitlines()[0]
        if "expect: schema" in first:
            expect = "schema"
        values = cl.load_values(path)
        try:
            cl.render(values)
            report(False, f"{path.name}", "Helm rendered it without error")
            continue
        except helm_python.HelmError as e:
            helm_msg = " ".join(str(e).split())[:160]
        if expect == "schema":
            errs = cl.values_schema_errors(values)
            report(bool(errs), f"{path.name} refused by values.schema.json",
                   (errs[0][:120] if errs else "jsonschema accepted it") + f" | helm: {helm_msg}")
        else:
            report(True, f"{path.name} refused by the templates", helm_msg)


def main() -> int:
    lint()
    schemas()
    bad_values()
    if failures:
        print(f"chart checks: {len(failures)} failed: {', '.join(failures)}")
        return 1
    print("chart checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The deployment files, checked offline: what can be checked without a cluster or a balancer run.

- ``deploy/k8s.yaml``: every object validated against the Kubernetes API schemas with
  ``kubernetes-validate`` (the ``dev`` extra; it bundles the schemas, nothing is downloaded), in
  strict mode (an unknown field is an error, not ignored), for every Kubernetes version the pinned
  package bundles (1.25 to 1.37 with kubernetes-validate 1.37.0). Nothing here applies the manifest
  to a cluster: a schema says the objects are well formed, not that a cluster runs them.
- ``deploy/haproxy.cfg``: ``haproxy -c`` (Debian's HAProxy, installed by scripts/setup.sh), with
  warnings and diagnostics counted as failures. tests/test_balancer.py runs the same file in front of
  two engines.

Each check is also shown a deliberately broken copy and must refuse it, so none passes vacuously.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "k8s.yaml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
KINDS = ["PersistentVolumeClaim/s2s-models", "Job/s2s-models-fetch", "Deployment/s2s-engine",
         "Service/s2s-engine", "Service/s2s-engine-pods"]


def kubernetes_versions() -> list[str]:
    """The Kubernetes versions (major.minor) whose schemas the installed package bundles."""
    from kubernetes_validate.utils import all_versions, major_minor

    return sorted({major_minor(v) for v in all_versions()}, key=lambda v: tuple(map(int, v.split("."))))


def manifest() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in docs] == KINDS, "deploy/k8s.yaml changed: update KINDS"
    return docs


def schema_errors(docs: list[dict[str, Any]], version: str) -> list[str]:
    """Each object that does not validate (strict) against Kubernetes ``version``, with why."""
    import kubernetes_validate as kv

    errors = []
    for d in docs:
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message}")
    return errors


def test_the_kubernetes_schemas_cover_the_versions_we_claim():
    versions = kubernetes_versions()
    assert versions[0] == "1.25" and versions[-1] == "1.37", versions  # the module docstring says so


@pytest.mark.parametrize("version", kubernetes_versions())
def test_the_kubernetes_manifest_is_valid(version):
    assert schema_errors(manifest(), version) == []


def _engine(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return docs[KINDS.index("Deployment/s2s-engine")]["spec"]["template"]["spec"]["containers"][0]


BREAKAGES = {  # what a slip of the pen would do to deploy/k8s.yaml, and where the schema must catch it
    "a misspelt field": lambda docs: _engine(docs)["readinessProbe"].__setitem__(
        "httpGet", {"pth": "/readyz", "port": "realtime"}),
    "a number as text": lambda docs: docs[KINDS.index("Deployment/s2s-engine")]["spec"].__setitem__("replicas", "two"),
    "a container without a name": lambda docs: _engine(docs).pop("name"),
    "a field at the wrong level": lambda docs: docs[KINDS.index("Deployment/s2s-engine")]["spec"].__setitem__(
        "terminationGracePeriodSeconds", 30),
    "an unknown API version": lambda docs: docs[KINDS.index("Job/s2s-models-fetch")].__setitem__(
        "apiVersion", "batch/v2"),
    "a map where a list goes": lambda docs: _engine(docs).__setitem__("env", {"S2S_TOKEN": "t"}),
}
# Not caught by a schema (the API server's own validation is): name formats and lengths (a port name
# over 15 characters), a selector that does not match the pod labels. tests/test_balancer.py checks
# the manifest's meaning against the engine (arguments, ports, probes, grace, selectors).


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_manifest_is_refused(breakage):
    docs = copy.deepcopy(manifest())
    BREAKAGES[breakage](docs)
    version = kubernetes_versions()[-1]
    errors = schema_errors(docs, version)
    assert len(errors) == 1, errors  # the broken object, and only it


def haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    """``haproxy -c``: parse and check the configuration (``-dW``: a warning fails it; ``-dD``: with
    the diagnostics for suspicious statements)."""
    exe = shutil.which("haproxy")
    assert exe, "haproxy is required for these tests: scripts/setup.sh installs it (apt-get install haproxy)"
    return subprocess.run([exe, "-c", "-dW", "-dD", "-f", str(path)], capture_output=True, text=True, timeout=30)


def test_the_haproxy_config_is_valid():
    result = haproxy_check(HAPROXY_CFG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout


@pytest.mark.parametrize(("old", "new"), [
    ("balance leastconn", "balance leastconns"),  # an unknown algorithm
    ("    server engine2 127.0.0.1:8766", "    server engine1 127.0.0.1:8766"),  # two servers of one name
    ("timeout tunnel 1h", "timeout tunnel 1 hour"),  # a unit HAProxy does not know
])
def test_a_broken_haproxy_config_is_refused(tmp_path, old, new):
    text = HAPROXY_CFG.read_text()
    assert text.count(old) == 1, f"deploy/haproxy.cfg changed: {old!r} is not there once"
    broken = tmp_path / "haproxy.cfg"
    broken.write_text(text.replace(old, new))
    result = haproxy_check(broken)
    assert result.returncode != 0, result.stdout + result.stderr

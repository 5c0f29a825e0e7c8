"""Every YAML manifest under infra/ parses, and the production ones say what the README promises:
Airflow on PostgreSQL with a non-local executor and the DAGs from a git bundle, MLflow on
PostgreSQL + S3, and no secret written into a manifest or a command line."""

import json
import re
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
MANIFESTS = sorted(p for ext in ("*.yaml", "*.yml") for p in INFRA.rglob(ext))


def test_there_are_manifests():
    names = {p.relative_to(INFRA).as_posix() for p in MANIFESTS}
    assert {"airflow/values.yaml", "mlflow/deployment.yaml", "ray/raycluster.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_manifest_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: empty"
    for d in docs:
        assert isinstance(d, dict), f"{path}: a document is not a mapping"
        if path.name != "values.yaml":  # Kubernetes objects (Helm values are not)
            assert d.get("apiVersion") and d.get("kind"), f"{path}: no apiVersion/kind"
    text = path.read_text()
    assert not re.search(r"postgresql://[^:\s]+:[^.@\s]{4,}@", text), f"{path}: a password"


def test_airflow_values_production_settings():
    v = yaml.safe_load((INFRA / "airflow" / "values.yaml").read_text())
    assert v["executor"] in ("KubernetesExecutor", "CeleryExecutor")
    assert v["postgresql"]["enabled"] is False and v["data"]["metadataSecretName"]
    bundles = json.loads(v["config"]["dag_processor"]["dag_bundle_config_list"])
    assert bundles[0]["classpath"].endswith("GitDagBundle")
    assert bundles[0]["kwargs"]["subdir"] == "dags"
    env = {e["name"]: e.get("value") for e in v["env"]}
    assert {"EXFM_S3_ENDPOINT", "EXFM_TRACKING_URI", "EXFM_RAY_ADDRESS"} <= set(env)
    assert json.loads(env["EXFM_SCHEDULE"])["start_date"]
    assert not any("KEY" in k or "TOKEN" in k for k in env), "secrets belong in exfm-env"


def test_mlflow_on_postgres_and_s3_without_secrets_on_the_command_line():
    docs = list(yaml.safe_load_all((INFRA / "mlflow" / "deployment.yaml").read_text()))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert any(a.startswith("--artifacts-destination=s3://") for a in c["args"])
    assert not any("backend-store-uri" in a for a in c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert any(d["kind"] == "Service" for d in docs)

"""load_remote_schema tells a missing schema from an S3 outage (an InternalError read as "no schema"
sent on-call to re-ingest data that was there)."""

import boto3
import pytest
from botocore.stub import Stubber

import exfm.storage.partitions as P
from exfm.config import load_config
from exfm.storage.s3 import StorageError


@pytest.mark.parametrize("code,says", [("NoSuchKey", "no dataset schema in the bucket"),
                                       ("InternalError", "an outage, not a missing schema")])
def test_missing_schema_and_outage_read_differently(monkeypatch, tmp_path, code, says):
    cfg = load_config(None, [f"state_dir={tmp_path}"], env={})
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s", endpoint_url="http://127.0.0.1:1")
    stub = Stubber(client)
    stub.add_client_error("get_object", service_error_code=code, http_status_code=404
                          if code == "NoSuchKey" else 500)
    monkeypatch.setattr(P, "s3_client", lambda cfg: client)
    with stub, pytest.raises(StorageError) as e:
        P.load_remote_schema(cfg)
    assert says in str(e.value) and "_schema.yaml" in str(e.value)

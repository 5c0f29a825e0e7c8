"""Cost of the embedded MLflow's login check: ``python bench/mlflow_auth.py [--calls N]``.

Starts SeaweedFS + MLflow (the stack's basic-auth app) under a temp state folder, once with
``tracking.auth_cache_ttl_s=0`` (MLflow's default: every request checks the password hash, a
deliberately slow KDF, three to four times) and once with the stack's default cache, and times N
authenticated ``experiments/search`` calls against each (after one warm-up call). Prints ms per
call and the ratio. Use free ports with ``--set ports.mlflow=...`` etc. if the defaults are taken.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import time
import urllib.request

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def time_calls(cfg, calls: int) -> float:
    """Seconds per authenticated REST call to ``cfg``'s MLflow."""
    from exfm.stack.services import MLFLOW_ADMIN_USER, MLFLOW_PASSWORD_KEY, read_state_secrets

    pw = read_state_secrets(cfg.state_path)[MLFLOW_PASSWORD_KEY]
    auth = "Basic " + base64.b64encode(f"{MLFLOW_ADMIN_USER}:{pw}".encode()).decode()
    req = urllib.request.Request(f"{cfg.tracking_uri}/api/2.0/mlflow/experiments/search",
                                 data=json.dumps({"max_results": 10}).encode(), method="POST",
                                 headers={"Authorization": auth,
                                          "Content-Type": "application/json"})

    def call():
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()

    call()
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=40)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    from exfm.config import load_config
    from exfm.stack import stack_down, stack_up

    default_ttl = load_config(None, [], env={}).tracking.auth_cache_ttl_s
    print(f"mlflow auth bench: {args.calls} calls each, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    per_call = {}
    for ttl in (0, default_ttl):
        with tempfile.TemporaryDirectory(prefix="exfm-mlauth-") as tmp:
            cfg = load_config(None, [f"state_dir={tmp}", f"tracking.auth_cache_ttl_s={ttl}",
                                     *args.overrides], env={})
            stack_up(cfg, ["s3", "mlflow"], log=lambda *_: None)
            try:
                per_call[ttl] = time_calls(cfg, args.calls)
            finally:
                stack_down(cfg, ["s3", "mlflow"], log=lambda *_: None)
        print(f"auth_cache_ttl_s={ttl:<4} {1000 * per_call[ttl]:8.1f} ms per call", flush=True)
    print(f"cache on / off: {per_call[0] / per_call[default_ttl]:.1f}x faster per call")


if __name__ == "__main__":
    main()

"""Shared test setup: quiet noisy loggers, keep every test on the CPU with few threads."""

import logging
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
logging.getLogger("great_expectations").setLevel(logging.WARNING)

# Modules that start a whole stack of their own (with Airflow) run before any test that starts the
# session's shared stacks, so they never share the two cores with those stacks' idle services
# (Ray's dashboard, agents and log monitor, Airflow's loops). Order within each group is kept.
OWN_STACK_FIRST = ("test_scheduler.py", "test_scheduler_postgres.py", "test_dag_failures.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return OWN_STACK_FIRST.index(name) if name in OWN_STACK_FIRST else len(OWN_STACK_FIRST)

    items[:] = sorted(items, key=rank)  # sorted() is stable

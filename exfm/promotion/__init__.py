"""What serves: the VM promotion gate (``@challenger`` -> ``@champion``, ``@champion_prev`` for
rollback), the comparison rules it shares with FM blessing, and the FM freshness policy.

``rules`` and ``freshness`` are pure (no MLflow); ``gate`` is the registry adapter.
"""

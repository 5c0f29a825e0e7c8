"""Test-only Ray job entry: ``ray_jobs.train_fm`` with one rank killed on its first attempt.

``python -m tests.integration.fault_train_fm --day D ...`` (same arguments as ray_jobs.train_fm)
with ``EXFM_TEST_FAIL_RANK_AFTER_CHUNKS=RANK:CHUNKS`` in the job env: the FM train loop runs
wrapped by :func:`faulty_fm_train_loop`, and rank RANK dies (``os._exit``) before its chunk CHUNKS
when no checkpoint was restored. The product (``exfm.jobs.fm_day``, ``exfm.compute.fm_worker``)
knows nothing of this: the fault comes in through the test's own entry point.
"""

from __future__ import annotations

import os
import time

import exfm.compute.fm_worker as fm_worker

FAIL_ENV = "EXFM_TEST_FAIL_RANK_AFTER_CHUNKS"
_real_loop = fm_worker.fm_train_loop


class _DyingShard:
    def __init__(self, shard, die_at: int):
        self._shard, self._die_at = shard, die_at

    def iter_batches(self, **kw):
        for i, batch in enumerate(self._shard.iter_batches(**kw)):
            if i == self._die_at:
                time.sleep(1.0)  # let the previous report reach the controller, then die hard
                os._exit(17)
            yield batch


def faulty_fm_train_loop(config: dict) -> None:
    import ray.train

    spec = os.environ.get(FAIL_ENV)
    if spec and ray.train.get_checkpoint() is None:  # the first attempt only
        rank, chunks = (int(x) for x in spec.split(":"))
        if ray.train.get_context().get_world_rank() == rank:
            real_shard = ray.train.get_dataset_shard
            ray.train.get_dataset_shard = lambda name: _DyingShard(real_shard(name), chunks)
    return _real_loop(config)


if __name__ == "__main__":
    from exfm.compute.entry import main_guard
    from ray_jobs import train_fm

    fm_worker.fm_train_loop = faulty_fm_train_loop  # fm_day imports it at call time
    main_guard(train_fm.main)

"""A day's work as plain library functions, one module per job.

- :mod:`exfm.jobs.fm_day`: ``run(cfg, day) -> FMDayResult``: the FM's day on Ray Train, registered.
- :mod:`exfm.jobs.das_day`: ``run(cfg, day, final=False) -> AugmentResult``: DAS + its MLflow run.
- :mod:`exfm.jobs.vm_day`: ``run(cfg, day, vm) -> VMDayResult`` in this process,
  ``run_on_ray(cfg, day, vm)`` as one Ray task with a training worker's resources.

Each is called in-process (tests, debugging) and by the thin ``ray_jobs/*.py`` entrypoints that
the pipeline submits through the Ray Jobs API; results have ``as_dict()`` (the ``EXFM_RESULT``).
"""

"""FM training for one day on Ray Train: ``python -m ray_jobs.train_fm --day D [--config C]``.

The day's work is :func:`exfm.jobs.fm_day.run` (Ray Train over ``raw/day=D``, warm start,
checkpoints on the bucket, registration); this entrypoint parses, calls it and prints
``EXFM_RESULT {"version", "rows_seen", "rows_day", "metrics", ...}``.
"""

from __future__ import annotations

from exfm.compute.entry import job_parser, load_job_config, main_guard, print_result
from exfm.jobs import fm_day


def main(argv: list[str] | None = None) -> dict:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--row-log-dir", default=None,
                   help="tests: each worker appends the row ids it trains on there")
    args = p.parse_args(argv)
    out = fm_day.run(load_job_config(args), args.day, row_log_dir=args.row_log_dir).as_dict()
    print_result(out)
    return out


if __name__ == "__main__":
    main_guard(main)

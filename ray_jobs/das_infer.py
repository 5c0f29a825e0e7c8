"""DAS batch inference for one day: ``python -m ray_jobs.das_infer --day D [--config C] [--set k=v]``.

The day's work is :func:`exfm.jobs.das_day.run` (the leased FM inferred on ``raw/day=D`` by a Ray
Data actor pool, ``augmented/day=D`` committed, the run logged to ``exfm-das``); this entrypoint
parses, calls it and prints ``EXFM_RESULT {json}``.
"""

from __future__ import annotations

from exfm.compute.entry import job_parser, load_job_config, main_guard, print_result
from exfm.jobs import das_day


def main(argv: list[str] | None = None) -> dict:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--final", action="store_true",
                   help="late labels: close the label window now (drop rows still unlabeled)")
    args = p.parse_args(argv)
    out = das_day.run(load_job_config(args), args.day, final=args.final).as_dict()
    print_result(out)
    return out


if __name__ == "__main__":
    main_guard(main)

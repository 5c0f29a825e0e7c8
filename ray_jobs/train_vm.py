"""One VM's day: ``python -m ray_jobs.train_vm --day D --vm NAME [--config C]``.

The day's work is :func:`exfm.jobs.vm_day.run_on_ray` (one Ray task with a training worker's
resources: progressive eval, tuning, one pass, registration of both arms); this entrypoint
parses, calls it and prints ``EXFM_RESULT {"vm", "fm_version", "rows", "source", "arms"}``.
"""

from __future__ import annotations

from exfm.compute.entry import job_parser, load_job_config, main_guard, print_result
from exfm.jobs import vm_day


def main(argv: list[str] | None = None) -> dict:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--vm", required=True, help="the VM's name in config `vms`")
    args = p.parse_args(argv)
    out = vm_day.run_on_ray(load_job_config(args), args.day, args.vm).as_dict()
    print_result(out)
    return out


if __name__ == "__main__":
    main_guard(main)

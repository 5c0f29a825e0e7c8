"""Where exfm's files live: the one place that resolves the project root, the DAG folder and the
Airflow launcher, so that a checkout, an editable install and an installed package agree.

Lookup order for the project root (the folder holding ``dags/``, ``ray_jobs/``, ``infra/``):
``$EXFM_HOME`` when set, else the checkout this package was imported from (``exfm/..``), else the
current directory. Each path below can also be overridden on its own by its env var.

>>> project_root().joinpath("exfm").is_dir()
True
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "EXFM_HOME"
DAGS_ENV = "EXFM_AIRFLOW_DAGS_FOLDER"
LAUNCHER_ENV = "EXFM_AIRFLOW_LAUNCHER"


def _is_root(p: Path) -> bool:
    return (p / "dags").is_dir() and (p / "ray_jobs").is_dir()


def project_root() -> Path:
    """The folder holding ``dags/``, ``ray_jobs/`` and ``infra/`` (see the module docstring)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parents[1]
    if _is_root(here):
        return here
    cwd = Path.cwd()
    return cwd if _is_root(cwd) else here


def dags_folder() -> Path:
    """Airflow's DAG folder: ``$EXFM_AIRFLOW_DAGS_FOLDER`` or ``<root>/dags``."""
    env = os.environ.get(DAGS_ENV)
    return Path(env).expanduser().resolve() if env else project_root() / "dags"


def airflow_launcher() -> Path:
    """The script that starts Airflow's processes locally: ``<root>/infra/local/airflow_launcher.py``."""
    env = os.environ.get(LAUNCHER_ENV)
    return (Path(env).expanduser().resolve() if env
            else project_root() / "infra" / "local" / "airflow_launcher.py")

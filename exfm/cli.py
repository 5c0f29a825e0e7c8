"""The one entry point, ``exfm``. Each command lives in ``exfm/commands/<name>.py`` and is
imported only when called, so ``exfm --help`` stays fast and one broken area cannot break the rest.

Every command takes ``--config PATH`` (default ``$EXFM_CONFIG`` or ``./params.yaml``) and
``--set a.b=c`` overrides, prints progress on long work, and exits non-zero with a one-line
reason on failure.
"""

from __future__ import annotations

import importlib
import sys

import click

# command name -> "module:attribute" (a click.Command or click.Group)
COMMANDS = {
    "stack": "exfm.commands.stack:stack",
    "data": "exfm.commands.data:data",
    "reproduce": "exfm.commands.reproduce:reproduce",
    "run-day": "exfm.commands.run_day:run_day",
    "demo": "exfm.commands.demo:demo",
    "das": "exfm.commands.das:das",
    "ray": "exfm.commands.ray:ray_cmd",
    "offline": "exfm.commands.offline:offline",
    "promote": "exfm.commands.promote:promote", "rollback": "exfm.commands.promote:rollback",
    "gate": "exfm.commands.promote:gate",
    "retry-day": "exfm.commands.retry:retry_day_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:  # an area not built yet, or broken
            @click.command(name=name, help=f"(unavailable: {e})")
            def _unavailable() -> None:
                raise click.ClickException(f"command '{name}' is unavailable: {e}")
            return _unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="exfm")
def cli() -> None:
    """exfm: one foundation model teaches many serving models through external distillation."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: turn our known errors into a one-line reason and exit code 1."""
    from exfm.config import ConfigError
    from exfm.data.schema import DatasetError

    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (ConfigError, DatasetError) as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        return 1
    except Exception as e:  # noqa: BLE001 - only our own known errors, the rest re-raised
        if not isinstance(e, _known_errors()):
            raise
        click.echo(f"error: {_one_line(e)}", err=True)
        return 1
    return 0


def _one_line(e: BaseException) -> str:
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors of ours whose message is the whole story (imported only when one escaped)."""
    from exfm.compute.submit import RayJobError
    from exfm.das.augment import AugmentError
    from exfm.registry.mlflow_registry import RegistryError
    from exfm.stack.procs import StackError
    from exfm.storage.s3 import StorageError

    return (RayJobError, AugmentError, RegistryError, StackError, StorageError)


if __name__ == "__main__":
    sys.exit(main())

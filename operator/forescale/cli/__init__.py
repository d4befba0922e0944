"""The ``forescale`` command line. Each subcommand lives in its own module here.

Bad input never shows a traceback: :func:`main` turns :class:`InvalidInputError` (and
click's own usage errors) into one line on stderr and exit code 2; any other error of
ours, and an OSError a command did not turn into one, is one line and exit code 1.
"""

from __future__ import annotations

from forescale.threads import limit_native_threads

limit_native_threads()  # before numpy and torch load

import importlib
import sys
from types import ModuleType

import click

from forescale import __version__
from forescale.core.errors import ForescaleError, InvalidInputError, os_reason

#: Subcommand modules; each defines a click command named ``command``.
SUBCOMMANDS = ("size", "forecast", "train", "backtest", "validate", "run")

EXIT_BAD_INPUT = 2


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when it is used (torch is heavy)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in SUBCOMMANDS if self._module(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = self._module(cmd_name)
        if module is None:
            return None
        command: click.Command = module.command
        return command

    @staticmethod
    def _module(name: str) -> ModuleType | None:
        if name not in SUBCOMMANDS:
            return None
        try:
            return importlib.import_module(f"forescale.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name == f"forescale.cli.{name}_cmd":
                return None
            raise


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forescale")
def cli() -> None:
    """forescale: scale Kubernetes workloads before their traffic arrives."""


def main(argv: list[str] | None = None) -> int:
    try:
        # Not standalone: click returns a command's exit code (click.exceptions.Exit, as
        # ``validate`` raises for an invalid file) instead of calling sys.exit itself.
        code = cli.main(args=argv, prog_name="forescale", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("forescale: aborted", err=True)
        return 130
    except click.UsageError as exc:
        click.echo(f"forescale: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        click.echo(f"forescale: {exc.format_message()}", err=True)
        return exc.exit_code
    except InvalidInputError as exc:
        click.echo(f"forescale: error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except ForescaleError as exc:
        click.echo(f"forescale: error: {exc}", err=True)
        return 1
    except OSError as exc:  # the system refused (disk full, read-only): never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"forescale: error: {where}{os_reason(exc)}", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

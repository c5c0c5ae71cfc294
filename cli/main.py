"""Entry point: builds the typer app and maps domain errors to one stderr line + exit 2."""

from __future__ import annotations

import sys

import typer

from mome_edge.cli import demo_cmd, evaluate_cmd, train_cmd
from mome_edge.cli import compile_cmd, inspect_cmd, predict_cmd
from mome_edge.cli import bench_cmd, export_cmd
from mome_edge.cli import prepare_cmd
from mome_edge.errors import MomeError

INVOCATION_ARGS: list[str] = []  # what this process was called with (for re-launching under torchrun)

app = typer.Typer(
    name="mome-edge",
    help="Compress multi-task recommendation models with Mixture-of-Masked-Experts and ship them to devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train")(train_cmd.train)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("demo")(demo_cmd.demo)
app.command("compile")(compile_cmd.compile_command)
app.command("inspect")(inspect_cmd.inspect_command)
app.command("predict")(predict_cmd.predict_command)
app.command("export")(export_cmd.export)
app.command("bench")(bench_cmd.bench)
app.command("prepare")(prepare_cmd.prepare)


def _print_version(value: bool) -> None:
    if value:
        from mome_edge import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    """Compress multi-task recommendation models with Mixture-of-Masked-Experts and ship them to devices."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; every user error ends as one `error: ...` line and exit 2."""
    global INVOCATION_ARGS
    INVOCATION_ARGS = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, standalone_mode=False)
    except MomeError as exc:
        _fail(str(exc))
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted; files already written are complete (writes are atomic)", code=130)
    except OSError as exc:
        # A path problem no command anticipated (a folder where a file is expected, a read-only
        # or full disk): still one line and exit 2, never a traceback.
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot access{where} ({exc.strerror or exc}); check the path, its permissions and the free disk space")
    except Exception as exc:
        # Usage errors of the CLI parser (bad flag, bad value). Typer vendors click in some
        # versions and re-exports it in others, so match the interface, not the class.
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
            sys.exit(0)
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _fail(exc.format_message().replace("\n", " ") + hint, code=exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2) -> None:
    message = " ".join(str(message).split())  # exactly one line, whatever the message quotes
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()

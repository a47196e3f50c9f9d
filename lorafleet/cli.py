"""`lorafleet`: the root Typer app, its groups, and each area's commands mounted by `register(groups)`.

Heavy imports happen inside command bodies so `lorafleet --help` stays fast.
A `LorafleetError` prints as one line (exit 2); `--debug` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorafleet.shared.errors import LorafleetError

app = typer.Typer(
    name="lorafleet",
    help="Train, validate, register and keep improving specialist LoRA adapters (event-driven, NATS JetStream).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

GROUP_HELP = {
    "data": "Datasets: load sources, verify, dedup, split, enrich.",
    "model": "Base models: tiny local models, local serving.",
    "adapter": "Train and inspect LoRA adapters.",
    "eval": "Evaluate adapters: sampled generation, sandbox-judged pass@k, gate.",
    "registry": "Registered adapter versions, A/B tests, promotion and rollback.",
    "sandbox": "Run and judge untrusted code.",
    "events": "The event log: tail it, export the JSON Schemas.",
}
groups: dict[str, typer.Typer] = {"root": app}
for _name, _help in GROUP_HELP.items():
    groups[_name] = typer.Typer(help=_help, no_args_is_help=True)
    app.add_typer(groups[_name], name=_name)

# Each area's CLI module; `register(groups)` adds its commands.
AREA_CLIS = (
    "lorafleet.sandbox_cli",
    "lorafleet.services.ingest.cli",
    "lorafleet.services.enrich.cli",
    "lorafleet.services.trainer.cli",
    "lorafleet.services.evaluator.cli",
    "lorafleet.services.registry.cli",
    "lorafleet.demo.cli",
)

_state = {"debug": False}
load_errors: list[tuple[str, BaseException, str]] = []


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks", envvar="LORAFLEET_DEBUG")] = False,
    nats_url: Annotated[Optional[str], typer.Option(
        "--nats-url", help="NATS server(s), comma-separated for a cluster (else $LORAFLEET_NATS_URL, else the embedded server)",
    )] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="embedded server store, caches, local artifacts (else $LORAFLEET_DATA_DIR, else ./.lorafleet)",
    )] = None,
) -> None:
    _state["debug"] = debug
    # Through the environment, so every area's get_settings() and every child process sees them.
    if nats_url is not None:
        os.environ["LORAFLEET_NATS_URL"] = nats_url
    if data_dir is not None:
        os.environ["LORAFLEET_DATA_DIR"] = str(data_dir)
    from lorafleet.shared.settings import get_settings

    get_settings()  # a bad LORAFLEET_* value fails here, as one line


def mount_area_clis() -> None:
    for module in AREA_CLIS:
        try:
            importlib.import_module(module).register(groups)
        except Exception as exc:  # a broken area must not take the whole CLI down; it is reported on every run
            load_errors.append((module, exc, traceback.format_exc()))


from lorafleet import commands as cli_bus  # noqa: E402  (root commands: up, serve, status, events ...)

cli_bus.register(groups)
mount_area_clis()


def report_load_errors(debug: bool) -> None:
    for module, exc, tb in load_errors:
        print(f"lorafleet: warning: commands of {module} are unavailable ({type(exc).__name__}: {exc})"
              + ("" if debug else "; --debug shows why"), file=sys.stderr)
        if debug:
            print(tb, file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    report_load_errors("--debug" in args or os.environ.get("LORAFLEET_DEBUG", "").lower() in ("1", "true", "yes"))
    try:
        result = app(args=args, prog_name="lorafleet", standalone_mode=False)
    except LorafleetError as exc:
        _fail(f"error: {exc}", exc.exit_code, exc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130, None)
    except KeyboardInterrupt:
        _fail("interrupted", 130, None)
    except Exception as exc:
        from typer._click.exceptions import ClickException  # typer >= 0.2x vendors its own click

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        _fail(f"unexpected error: {type(exc).__name__}: {exc}", 1, exc, hint=True)
    # Without standalone mode click returns an Exit's code instead of exiting.
    sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int, exc: BaseException | None, hint: bool = False) -> None:
    debug = _state["debug"] or os.environ.get("LORAFLEET_DEBUG", "").lower() in ("1", "true", "yes")
    if debug and exc is not None:
        traceback.print_exception(exc)
    print(f"lorafleet: {message}" + (" (run with --debug for the traceback)" if hint and not debug else ""), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()

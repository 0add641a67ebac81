"""csr-adapter command line (click). Each subcommand lives in its own module, imported lazily."""

from __future__ import annotations

import importlib
import os
import re
import sys

import click

from .. import __version__

# command name -> "module:attribute" (modules under csr_adapter.cli)
COMMANDS = {
    "info": "core:info",
    "encode": "core:encode",
    "ingest": "ingest:ingest",
    "search": "ingest:search",
    "export": "export:export",
    "train": "train:train",
    "eval": "train:eval_cmd",
    "serve": "serve:serve",
}


# Library errors name parameters (``model=DIR``, ``recreate=True``); the command line words them as its flags.
# Whole phrases, applied in order (the more specific first).
FLAG_WORDING = (
    ("path and url are exclusive: path is the embedded store, url a server",
     "--path and --url are exclusive: --path is the embedded store, --url a server"),
    ("check the path and collection name", "check --path/--collection"),
    ("the same model/k/hybrid/idf", "the same --model/--k/--hybrid/--idf"),
    ("a new collection with adapt=True, or recreate=True, adapt=True",
     "a new --collection with --adapt, or --recreate --adapt"),
    ("another collection", "another --collection"),
    ("adapt=False", "--no-adapt"),
    ("adapt=True", "--adapt"),
    ("model=DIR", "--model DIR"),
    ("(url=URL)", "(--url URL)"),
    ("path=DIR", "--path DIR"),
    ("recreate=True", "--recreate"),
    ("hybrid=True", "--hybrid"),
    ("idf=True", "--idf"),
)


# ``backend='faiss'`` -> ``--backend faiss`` (options that take a word)
_CHOICE = re.compile(r"\b(backend|budget|device|runtime|layout|mode)='([\w:.-]+)'")


def flag_wording(message: str) -> str:
    """A library error message as the command line says it (its flags instead of Python parameters)."""
    for param, flag in FLAG_WORDING:
        message = message.replace(param, flag)
    return _CHOICE.sub(r"--\1 \2", message)


class BadArgument(click.ClickException):
    """An argument the command line cannot take: one ``Error:`` line, exit status 2 (a usage error)."""

    exit_code = 2


def check_utf8(arg: str) -> str:
    """``arg`` if it is valid UTF-8 text, else :class:`BadArgument` (non-UTF-8 bytes reach Python as lone
    surrogates, which no tokenizer, store or JSON encoder takes)."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(arg[exc.start])
        what = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"lone surrogate U+{bad:04X}"
        shown = arg[:60].encode("utf-8", "backslashreplace").decode("utf-8")
        raise BadArgument(f"argument '{shown}' is not valid UTF-8 ({what}): give text, paths and values "
                          "as UTF-8") from None
    return arg


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            full = f"{__name__}.{module}"
            try:
                return getattr(importlib.import_module(full), attr)
            except ModuleNotFoundError as exc:
                if exc.name != full:
                    raise
                return None  # not built yet in this checkout
        return super().get_command(ctx, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for arg in args:
            check_utf8(arg)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        from ..errors import CSRAdapterError

        try:
            return super().invoke(ctx)
        except CSRAdapterError as exc:
            from .safe import printable

            raise click.ClickException(printable(flag_wording(str(exc)))) from None
        except KeyboardInterrupt:
            click.echo("interrupted: partial work is kept; re-run the same command to resume", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="csr-adapter")
def cli() -> None:
    """Ultra-sparse CSRv2 embeddings: encode, ingest into Qdrant/FAISS, search, train, evaluate."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    cli(prog_name="csr-adapter")

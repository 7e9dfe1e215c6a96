"""Shared plumbing of the Likeness management commands.

Every command has a description and examples in ``--help``, prints either readable text or,
with ``--json``, exactly one JSON document on stdout (progress and warnings go to stderr),
and turns bad input into one ``CommandError`` line and a non-zero exit status. An app adds
the errors of its own that are the user's to fix (``user_errors``) and its lookups.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TextIO, cast

from django.contrib.auth import get_user_model
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
    OutputWrapper,
)


class HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option order, with the description and examples printed as written."""


@dataclass
class Outcome:
    """What a command has to say: a JSON document, the same for people, and, when the
    command did not fully succeed, the one-line error that makes the exit status non-zero."""

    document: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    error: str = ""
    returncode: int = 1


class LikenessCommand(BaseCommand):
    """A command with ``--json``, examples in its help, and errors as one line.

    Subclasses implement ``add_options`` and ``run`` (returning an Outcome) and set
    ``examples``.
    """

    examples = ""
    # Exceptions whose message is for the user (bad input, their machine), beyond Django's
    # ValidationError and CommandError and OSError: printed as one line, never a traceback.
    user_errors: tuple[type[Exception], ...] = ()

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("formatter_class", HelpFormatter)
        if self.examples:
            kwargs.setdefault("epilog", "examples:\n" + self.examples.strip("\n"))
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_options(parser)
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON document on stdout (and nothing else there); progress and "
            "warnings go to stderr.",
        )

    def add_options(self, parser: CommandParser) -> None:
        raise NotImplementedError

    def run(self, **options: Any) -> Outcome:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["json"]
        self.verbosity = options["verbosity"]
        # Libraries that print (model loaders, progress bars) must not corrupt the JSON.
        redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
        user_errors: tuple[type[Exception], ...] = (*self.user_errors, OSError)
        try:
            with redirect:
                outcome = self.run(**options)
        except ValidationError as exc:
            self._fail(validation_message(exc), as_json)
        except user_errors as exc:
            self._fail(str(exc), as_json)
        except CommandError as exc:
            self._fail(str(exc), as_json, getattr(exc, "returncode", 1))
        if as_json:
            self.stdout.write(json.dumps(outcome.document, indent=2, default=str))
        else:
            for line in outcome.lines:
                self.stdout.write(line)
        if outcome.error:
            raise CommandError(one_line(outcome.error), returncode=outcome.returncode)

    def _fail(self, message: str, as_json: bool, returncode: int = 1) -> None:
        message = one_line(message)
        if as_json:
            self.stdout.write(json.dumps({"error": message}))
        raise CommandError(message, returncode=returncode) from None

    # --- stderr ------------------------------------------------------------------------
    def note(self, message: str) -> None:
        """A progress or warning line on stderr (silent with --verbosity 0)."""
        if self.verbosity > 0:
            self.stderr.write(message, style_func=_plain)


def _plain(text: str) -> str:
    return text


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def validation_message(exc: ValidationError) -> str:
    """A service's ValidationError as one line, each message once, keyed by its field."""
    if hasattr(exc, "error_dict"):
        parts = []
        for key, errors in exc.message_dict.items():
            text = " ".join(errors)
            parts.append(text if key == NON_FIELD_ERRORS else f"{key.replace('_', ' ')}: {text}")
        return one_line("; ".join(parts))
    return one_line(" ".join(exc.messages))


def add_user_option(parser: CommandParser) -> None:
    parser.add_argument(
        "--user",
        metavar="USERNAME",
        default="",
        help="Record this account as the creator (as the web forms record the researcher).",
    )


def user_lookup(username: str) -> Any:
    if not username:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user called {username!r}.")
    return user


# --- Tables and progress ---------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A plain-text table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLine:
    """One status line on stderr: redrawn in place on a terminal; elsewhere (logs, pipes)
    printed again only when it changes, and at most every ``log_every`` seconds."""

    def __init__(self, stream: TextIO, *, enabled: bool = True, log_every: float = 5.0) -> None:
        self.stream, self.enabled, self.log_every = stream, enabled, log_every
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last_text, self.last_logged, self.width = "", 0.0, 0

    def show(self, text: str, *, force: bool = False) -> None:
        if not self.enabled or text == self.last_text:
            return
        if self.tty:
            padding = " " * max(0, self.width - len(text))
            self.stream.write("\r" + text + padding)
            self.width = len(text)
        else:
            now = time.monotonic()
            if not force and now - self.last_logged < self.log_every:
                return
            self.stream.write(text + "\n")
            self.last_logged = now
        self.stream.flush()
        self.last_text = text

    def close(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width, self.last_text = 0, ""


def wrapped_stream(output: OutputWrapper) -> TextIO:
    """The stream under a command's ``stdout`` or ``stderr`` (written to without Django's
    styling and line endings). Django keeps it in ``_out``, which its stubs leave out."""
    return cast(TextIO, output._out)


def bar(fraction: float, width: int = 24) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


@contextlib.contextmanager
def atomic_output(path: str, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Write a file under a temporary name and move it into place only when complete, so a
    failed export leaves no partial file (and an existing file untouched)."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"Cannot write {path}: the folder {folder} does not exist.")
    handle, temporary = tempfile.mkstemp(prefix=".export-", dir=folder)
    try:
        opened = (
            os.fdopen(handle, "wb")
            if binary
            else os.fdopen(handle, "w", encoding="utf-8", newline="")
        )
        with opened as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise

"""Helpers for the command-line tests: run a management command in-process and read what it
printed on stdout (the result, or the JSON document) and stderr (progress, warnings)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command

from tests.integration.conftest import start_worker, worker_env  # noqa: F401 (fixtures)


@dataclass
class Printed:
    stdout: str
    stderr: str

    @property
    def document(self) -> Any:
        return json.loads(self.stdout)


def cli(*args: str) -> Printed:
    """Run ``manage.py <args>``; a CommandError propagates (its message is the one line the
    command line prints, and its returncode the exit status)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return Printed(out.getvalue(), err.getvalue())


def cli_fails(*args: str) -> tuple[Any, Printed]:
    """Run a command that must fail; return its CommandError and what it printed first."""
    from django.core.management.base import CommandError

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=out, stderr=err)
    return caught.value, Printed(out.getvalue(), err.getvalue())

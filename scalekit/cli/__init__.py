"""The ``scalekit`` command line: thin typer commands over the library API.

Each command group lives in its own module and imports heavy dependencies inside its commands, so that
``scalekit --help`` stays fast. User errors (:class:`~scalekit.errors.ScalekitError`) and operating-system errors
(``OSError``: a read-only or full disk, a missing permission) end as one line on stderr and exit status 2,
never as a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

from scalekit import __version__
from scalekit.errors import ScalekitError

from . import data, model, nnunet, predict, profile, study, train

app = typer.Typer(
    name="scalekit",
    help="Find the right size of MedNeXt for a segmentation task and a GPU budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"scalekit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find the right size of MedNeXt for a segmentation task and a GPU budget."""


app.add_typer(model.app, name="model")
app.command("upkern")(model.upkern_command)
app.add_typer(study.app, name="study")
app.command("profile")(profile.profile_command)
app.add_typer(data.app, name="data")
app.command("train")(train.train_command)
app.add_typer(nnunet.app, name="nnunet")
app.command("predict")(predict.predict_command)


def _os_error_message(err: OSError) -> str:
    """One line for an operating-system error: the file, the reason and what to check."""
    reason = err.strerror or str(err) or type(err).__name__
    folder = (os.path.dirname(str(err.filename)) or ".") if err.filename is not None else "the output folder"
    hint = {
        errno.ENOSPC: f"free some space on the disk of {folder}",
        errno.EDQUOT: f"free some space or raise the quota of {folder}",
        errno.EACCES: f"check the permissions of {folder}",
        errno.EPERM: f"check the permissions of {folder}",
        errno.EROFS: f"{folder} is on a read-only file system; choose another folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a file is in the way where a folder is needed",
    }.get(err.errno or 0)
    if err.filename is not None:
        target = f" -> {err.filename2}" if err.filename2 is not None else ""
        reason = f"cannot access {err.filename}{target}: {reason}"
    return reason + (f" ({hint})" if hint else "")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except ScalekitError as err:
        message = str(err).strip() or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        print(f"error: {_os_error_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None

"""The ``scalekit`` command line: thin typer commands over the library API.

Each command group lives in its own module and imports heavy dependencies inside its commands, so that
``scalekit --help`` stays fast. User errors (``ValueError`` and subclasses) end as one line on stderr and
exit status 2, never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from . import data, model, profile, study, train

app = typer.Typer(
    name="scalekit",
    help="Find the right size of MedNeXt for a segmentation task and a GPU budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(model.app, name="model")
app.command("upkern")(model.upkern_command)
app.add_typer(study.app, name="study")
app.command("profile")(profile.profile_command)
app.add_typer(data.app, name="data")
app.command("train")(train.train_command)
app.add_typer(train.nnunet_app, name="nnunet")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except ValueError as err:
        message = str(err).strip() or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None

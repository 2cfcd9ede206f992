"""The ``grounded-sam`` command. A thin layer over the Python API.

Only typer is imported at module level: torch, transformers and supervision load inside the
commands that need them, so ``grounded-sam --help`` answers fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="grounded-sam",
    help="Text-prompted segmentation and tracking: zero-shot detectors + SAM 2 / SAM 2.1 / SAM 1.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grounded-sam")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from grounded_sam import __version__

        return __version__


@app.command()
def version() -> None:
    """Print the installed grounded-sam version."""
    typer.echo(f"grounded-sam {_version()}")


@app.command("models")
def models() -> None:
    """List the bundled segmentation model configs."""
    from grounded_sam.configs import list_model_configs

    for name in list_model_configs():
        typer.echo(name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

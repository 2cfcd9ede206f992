"""The ``grounded-sam`` command (:mod:`~grounded_sam.cli.commands`), the outermost layer: nothing imports it.

- :mod:`~grounded_sam.cli.commands` — the typer app and its commands, a thin layer over the Python API;
- :mod:`~grounded_sam.cli.checks` — inputs, ontologies, choices and models checked before any model loads,
  ``models``, ``download``;
- :mod:`~grounded_sam.cli.device` — ``--device`` checked against the machine (without torch, then with it);
- :mod:`~grounded_sam.cli.auto` — the ``auto`` command's job (automatic masks to files).
"""

from grounded_sam.cli.commands import app, main

__all__ = ["app", "main"]

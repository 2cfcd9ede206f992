"""``python -m grounded_sam.cli``."""

from grounded_sam.cli.commands import main

main()

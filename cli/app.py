"""The ``autonl`` click group; the command modules add their commands to it."""
from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autonl")
def cli():
    """AutoNL: search, derive and deploy lightweight non-local networks."""

"""Click parameter types shared by the commands."""

import click

CACHE = click.Path(dir_okay=False, path_type=str)

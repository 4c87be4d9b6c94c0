"""``prunekit run``: the flags come from :mod:`prunekit.commands.run`."""
from ..commands.run import OPTIONS, execute  # noqa: F401

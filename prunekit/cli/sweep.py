"""``prunekit sweep``: the flags come from :mod:`prunekit.commands.sweep`."""
from ..commands.sweep import OPTIONS, execute  # noqa: F401

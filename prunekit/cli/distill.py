"""``prunekit distill``: the flags come from :mod:`prunekit.commands.distill`."""
from ..commands.distill import OPTIONS, execute  # noqa: F401

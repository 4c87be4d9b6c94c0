"""``prunekit info``: the flags come from :mod:`prunekit.commands.info`."""
from ..commands.info import OPTIONS, execute  # noqa: F401

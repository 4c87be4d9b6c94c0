"""``prunekit export``: the flags come from :mod:`prunekit.commands.export`."""
from ..commands.export import OPTIONS, execute  # noqa: F401

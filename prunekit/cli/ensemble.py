"""``prunekit ensemble``: the flags come from :mod:`prunekit.commands.ensemble`."""
from ..commands.ensemble import OPTIONS, execute  # noqa: F401

"""``prunekit eval``: the flags come from :mod:`prunekit.commands.eval`."""
from ..commands.eval import OPTIONS, execute  # noqa: F401

"""``prunekit scratch``: the flags come from :mod:`prunekit.commands.scratch`."""
from ..commands.scratch import OPTIONS, execute  # noqa: F401

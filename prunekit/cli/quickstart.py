"""``prunekit quickstart``: the flags come from :mod:`prunekit.commands.quickstart`."""
from ..commands.quickstart import OPTIONS, execute, quickstart  # noqa: F401

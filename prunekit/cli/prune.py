"""``prunekit prune``: the flags come from :class:`prunekit.commands.prune.PruneOptions`."""
from ..commands.prune import OPTIONS, PruneOptions, execute  # noqa: F401

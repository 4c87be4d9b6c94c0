"""``prunekit finetune``: the flags come from :mod:`prunekit.commands.finetune`."""
from ..commands.finetune import OPTIONS, execute  # noqa: F401

"""``prunekit train``: the flags come from :class:`prunekit.commands.train.TrainOptions`."""
from ..commands.train import OPTIONS, execute  # noqa: F401

"""Re-exports of the helpers shared by the commands for the CLI modules (they live in
:mod:`prunekit.commands.common`; the flags themselves come from :mod:`prunekit.options`)."""
from __future__ import annotations

from ..commands.common import (DEFAULT_DATASET, DEFAULT_MODEL, check_compatible, data_facts, input_size,  # noqa: F401
                               is_main_process, load_datasets, model_from_args, model_metrics, out_dir, parse_cfg,
                               parse_floats, parse_input_size, resolve_input_size, resume_kwargs, seeded,
                               standard_fields, train_config)

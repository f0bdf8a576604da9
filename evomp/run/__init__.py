"""A run: its spec, its context (task, float model, space, evaluator), its directory
and the final protocol every method is scored under.
"""

from __future__ import annotations

from evomp.run._context import (
    CACHE_FILE,
    RunContext,
    build_space,
    build_task,
    checkpoint_key,
    default_out_dir,
    make_context,
    open_run,
    qat_config,
    setup_logging,
    user_model_key,
)
from evomp.run._protocol import (
    EVAL_COLUMNS,
    CpuClock,
    FrontResult,
    finish_run,
    read_front,
    write_evaluations,
)
from evomp.run._rundir import (
    RunDir,
    RunLock,
    atomic_write_bytes,
    atomic_write_text,
    os_error,
    write_error,
    writing,
)
from evomp.run._spec import (
    PretrainSpec,
    QATSpec,
    RunSpec,
    SearchSpec,
    SpaceSpec,
    TaskSpec,
    load_spec,
    parse_spec,
    spec_to_toml,
    unknown_hw_parameter,
)
from evomp.run._storage import check_storage_url, load_run_study, mask_url, open_storage

__all__ = [
    "check_storage_url",
    "RunDir",
    "RunLock",
    "atomic_write_bytes",
    "atomic_write_text",
    "os_error",
    "write_error",
    "writing",
    "load_run_study",
    "mask_url",
    "open_storage",
    "CACHE_FILE",
    "checkpoint_key",
    "qat_config",
    "setup_logging",
    "user_model_key",
    "CpuClock",
    "EVAL_COLUMNS",
    "FrontResult",
    "PretrainSpec",
    "QATSpec",
    "RunContext",
    "RunSpec",
    "SearchSpec",
    "SpaceSpec",
    "TaskSpec",
    "build_space",
    "build_task",
    "default_out_dir",
    "finish_run",
    "load_spec",
    "make_context",
    "open_run",
    "parse_spec",
    "read_front",
    "spec_to_toml",
    "unknown_hw_parameter",
    "write_evaluations",
]

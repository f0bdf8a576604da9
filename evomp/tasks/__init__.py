"""Tasks (model factory + data + loss + metric), built-in offline tasks, the model zoo,
float pretraining and the QAT training loop."""

from __future__ import annotations

from evomp.tasks._builtin import TASK_MODELS, TASKS, get_task
from evomp.tasks._task import (
    NPZ_ARRAYS,
    Task,
    TensorData,
    accuracy,
    batches,
    check_arrays,
    from_arrays,
    from_npz,
    load_npz,
)
from evomp.tasks._train import (
    FINAL_FROM,
    Diverged,
    QATConfig,
    TrainConfig,
    TrainState,
    evaluate_model,
    float_cache_key,
    make_adam,
    pretrain,
    resolve_device,
    set_threads,
    steps_per_epoch,
    train_steps,
)
from evomp.tasks._zoo import MODELS, cnn1d, dscnn1d, get_model, mobilenetv1, resnet8

__all__ = [
    "MODELS",
    "NPZ_ARRAYS",
    "TASKS",
    "TASK_MODELS",
    "Diverged",
    "FINAL_FROM",
    "QATConfig",
    "Task",
    "TensorData",
    "TrainConfig",
    "TrainState",
    "accuracy",
    "batches",
    "check_arrays",
    "cnn1d",
    "dscnn1d",
    "evaluate_model",
    "float_cache_key",
    "from_arrays",
    "from_npz",
    "get_model",
    "get_task",
    "load_npz",
    "make_adam",
    "mobilenetv1",
    "pretrain",
    "resnet8",
    "resolve_device",
    "set_threads",
    "steps_per_epoch",
    "train_steps",
]

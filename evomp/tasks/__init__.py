"""Tasks (model factory + data + loss + metric), built-in offline tasks and the model zoo."""

from __future__ import annotations

from evomp.tasks._builtin import TASKS, get_task
from evomp.tasks._task import Task, TensorData, accuracy, batches, from_arrays, from_npz
from evomp.tasks._zoo import MODELS, cnn1d, dscnn1d, get_model, mobilenetv1, resnet8

__all__ = [
    "MODELS",
    "TASKS",
    "Task",
    "TensorData",
    "accuracy",
    "batches",
    "cnn1d",
    "dscnn1d",
    "from_arrays",
    "from_npz",
    "get_model",
    "get_task",
    "mobilenetv1",
    "resnet8",
]

"""What a task is and where its data comes from.

`tasks.registry` names the dense-prediction tasks (Taskonomy's vocabulary,
Standley et al.'s letters as aliases) with their losses, metrics and target
normalisation; `tasks.scenes` renders the embedded default data;
`tasks.taskonomy` reads and writes the Taskonomy on-disk layout;
`tasks.datasets` serves both through tensorflow-datasets.
"""

from tasks.registry import (  # noqa: F401
    MODALITIES,
    SEG_CLASSES,
    TASKS,
    Task,
    UnknownTaskError,
    get_task,
    resolve_tasks,
)

"""What a task is and where its data comes from.

`tasks.registry` names the tasks (Taskonomy's vocabulary, Standley et al.'s
letters as aliases) with their losses, metrics and target normalisation;
`tasks.scenes` renders the embedded default data; `tasks.taskonomy` reads
and writes the Taskonomy on-disk layout, `tasks.mtan` NYUv2 and Cityscapes
as MTAN preprocessed them, `tasks.celeba` CelebA's official layout;
`tasks.sources` names a source and its tasks; `tasks.custom` registers your
own tasks and takes in-memory arrays; `tasks.scene_data` holds the scenes'
settings and renders them in memory (no tensorflow-datasets needed);
`tasks.builders` and `tasks.datasets` serve the scenes and the folders
through tensorflow-datasets.
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

"""Task metrics: accuracy measured the way a user of that kind of model judges it.

One module per idea, each pure numpy and typed: :mod:`.classification` (top-k agreement,
accuracy), :mod:`.detection` (decode, NMS, F1 vs FP32), :mod:`.masks` (mask IoU), :mod:`.ctc`
(greedy decode, CER), :mod:`.decisions` (streaming decisions), :mod:`.channels` (per-channel
cosine and SNR); :mod:`.infer` reads the task from the graph, :mod:`.evaluate` scores it.
"""

from converters.tasks.evaluate import evaluate, load_user_metric, missing_evidence, task_score
from converters.tasks.infer import TASKS, TaskSpec, infer_task
from converters.tasks.score import Evidence, TaskScore, relative_drop

__all__ = ["TASKS", "Evidence", "TaskScore", "TaskSpec", "evaluate", "infer_task",
           "load_user_metric", "missing_evidence", "relative_drop", "task_score"]

"""Networks and their training.

``model`` (the shared-encoder, per-task-decoder network), ``cost`` (its
forward FLOPs from XLA's cost analysis), ``train`` (the jitted functional
step, evaluation, checkpoints, probes such as the TAG affinity), ``cli``
(what the command-line scripts share).
"""

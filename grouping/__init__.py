"""Task grouping for multi-task learning: which tasks should share a network.

Modules: ``selection`` (exact network selection: Standley et al. 2020, TAG
2021, HOA), ``tables`` (readers for measured loss tables and affinity matrices).
"""

"""Tasks: what data a model trains on, which heads it has, with which losses and metrics."""
from zoo.tasks.base import DataConfig, HeadSpec, MetricSpec, Task, TaskData, TaskSpec

__all__ = ["DataConfig", "HeadSpec", "MetricSpec", "Task", "TaskData", "TaskSpec"]

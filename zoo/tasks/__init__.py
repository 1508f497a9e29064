"""Tasks: what data a model trains on, which heads it has, with which losses and metrics."""
from zoo.data.config import DataConfig
from zoo.tasks.base import HeadSpec, MetricSpec, Task, TaskData, TaskSpec

__all__ = ["DataConfig", "HeadSpec", "MetricSpec", "Task", "TaskData", "TaskSpec"]

"""Tasks: what data a model trains on, which heads it has, with which losses and metrics (the contract
is ``zoo.tasks.base``)."""

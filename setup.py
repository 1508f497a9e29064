"""Packaging beyond what setup.cfg can say: the repository keeps ``heads/`` and ``registry.yaml`` at its
top level (the layout is fixed), while the installed package holds them as ``zoo.heads`` and
``zoo/registry.yaml``, so an installed zoo never puts a global ``heads`` module on the path and works
from any folder."""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """Copy the repository's ``registry.yaml`` into the built ``zoo`` package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads it from the repository root
            return
        target = Path(self.build_lib, "zoo")
        self.mkpath(str(target))
        self.copy_file("registry.yaml", str(target / "registry.yaml"))


setup(
    packages=find_packages(include=["zoo", "zoo.*"]) + ["zoo.heads"],
    package_dir={"zoo.heads": "heads"},
    cmdclass={"build_py": BuildPy},
)

"""Package list for setuptools (the rest of the metadata is in pyproject.toml).

``recipes/`` stays at the top level of the repository; the wheel carries ``recipes/smoke_cpu.yaml`` as
``holder_nemo/recipes/smoke_cpu.yaml`` (package data of ``holder_nemo.recipes``), where ``holderpo train`` finds its
default recipe when there is no source tree (``holder_nemo.reference.schema.default_recipe_path``).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["holder_nemo*"]), "holder_nemo.recipes"],
    package_dir={"holder_nemo.recipes": "recipes"},
)

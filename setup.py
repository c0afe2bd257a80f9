# Only the cffi extension is declared here; everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["kernel/machine/_build.py:ffibuilder"])

from __future__ import annotations

from setuptools import setup

setup(name="fidelity-setup", version="1.0", py_modules=["fidelity_setup"])

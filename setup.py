"""Package list for setuptools: core/ is ``gaf`` and plugins/ is ``gaf.plugins``.

Sub-packages are found on disk so that a new plugin family never drops out of the
wheel unnoticed (tests/test_packaging.py builds a wheel and checks).
"""

from setuptools import find_packages, setup

packages = ["gaf", "gaf.plugins"]
packages += ["gaf." + p for p in find_packages("core")]
packages += ["gaf.plugins." + p for p in find_packages("plugins")]

setup(packages=packages)

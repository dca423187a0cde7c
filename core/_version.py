"""The version of gaf, in a module of its own so that core modules can name it without
importing the package facade (``gaf/__init__.py``)."""

__version__ = "0.1.0"

"""The package version, in a module of its own so that any module can read it without importing the
whole package (vadasm/__init__.py imports graft, merge, methods and align for the seed's API names)."""

__version__ = "0.1.0"

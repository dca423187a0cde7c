"""Built-in gaf plugins: every concrete component, one sub-package per family."""

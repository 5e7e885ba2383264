"""fmtransfer's version, in a module of its own: what the package, the CLI and `runtime.versions()`
import without importing each other."""

__version__ = "0.5.0"

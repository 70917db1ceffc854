"""The package version and the version of the JSON result schema (``docs/result-schema.json``)."""

__version__ = "0.1.0"

SCHEMA_VERSION = "1.2"
"""Version of the ``--json`` document and mapping-file schema: the major part changes
when a key is removed or changes meaning, the minor part when keys are added."""

__all__ = ["SCHEMA_VERSION", "__version__"]

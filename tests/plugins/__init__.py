"""Plugin modules used by the tests (imported through ``VIREID_PLUGINS``), outside ``src/``."""

"""Plugins for the tests: modules outside the package that extend vireid through its public
registration functions only (imported in-process, or named in ``VIREID_PLUGINS`` with
``tests/`` on ``PYTHONPATH`` for the CLI)."""

"""Plugin modules for the tests: each registers toy entries through vireid's public
decorators only, as a module outside the package would (``VIREID_PLUGINS=tests.plugins.NAME``
with the repository root on ``PYTHONPATH``)."""

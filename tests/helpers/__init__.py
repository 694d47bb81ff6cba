"""What several test modules share, one module per kind of thing; a test module imports from here
(or takes a fixture from ``tests/conftest.py``), never from another test module."""

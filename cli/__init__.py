"""The ``autonl`` command line."""

"""The one CLI, ``inferledger``."""

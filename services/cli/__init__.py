"""The one CLI, ``inferledger``: :mod:`services.cli.main` is the root group, each command group
has its module here, and :mod:`services.cli.common` holds what they share. Nothing else in
``services`` imports this package."""

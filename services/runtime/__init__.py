"""Configuration, logging and the local (embedded) stack."""

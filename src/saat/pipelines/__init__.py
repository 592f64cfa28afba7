"""Pipelines: the plain functions behind the commands (train, evaluate, ...), over explicit objects."""

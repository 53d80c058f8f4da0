"""Dagster definitions: thin wrappers that call the plain functions of the package."""

"""Helpers for the tests and the bench, each written once; fixtures stay in conftest.py files."""

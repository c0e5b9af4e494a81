"""Tests against real services: PostgreSQL, Redis, real gunicorn (see conftest.py).

A package, so its conftest does not shadow the root conftest module that other
tests import names from.
"""

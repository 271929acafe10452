"""Loaded once by the kill-point matrix's fork server: every worker forked from it starts warm."""

from __future__ import annotations

from tests.faults import worker_main

worker_main.warm()

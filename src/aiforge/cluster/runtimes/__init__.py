"""Runtimes start and stop replica processes: locally (subprocesses) or, later, on Ray."""

"""Test helpers shared by several test packages (real servers on loopback, workers)."""

"""Tests of the resource host and the generic resource types."""

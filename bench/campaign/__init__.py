"""The fault campaign (`python -m bench.campaign`): see __main__.py."""

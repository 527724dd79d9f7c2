"""What the tests share that is not a fixture: builders, fakes, servers and small helpers.

The fixtures stay in the conftest files, which import from here; test modules import from here
too, never from a conftest.
"""

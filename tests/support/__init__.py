"""What the tests share: helpers, fixtures' parts, model builders and the real servers tests start.

Test modules (tests/test_*.py) import from here, never from each other; tools may import from here too.
"""

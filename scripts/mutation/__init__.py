"""Mutation testing (mutmut) and planted bugs: tools that check the tests can fail."""

"""What the tests and the bench need to drive toolbus from outside: Debian programs installed on
demand (``apt``) and child processes that are always stopped (``processes``).

Its own package because both use it and neither may own it: tests import nothing from the bench,
and the bench should not import the tests. The product does not use it, so it is not installed
with toolbus (pyproject's ``packages.find`` leaves it out); it is imported from the checkout.
"""

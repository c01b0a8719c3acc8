"""The ``toolbus`` command line: one module per verb (or family of verbs), and ``toolbus up``.

The CLI sits above every role: it may import gateway, workers and registry, and none of them
imports it. Its public face is the console script (``cli.main:main``), not Python names.
"""

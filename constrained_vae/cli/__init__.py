"""Every command line: a parser and a ``main`` per script. The scripts in ``experiments/`` and
``analysis/`` call these; nothing in the library imports this package."""

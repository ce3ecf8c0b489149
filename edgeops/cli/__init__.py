"""The ``edgeops`` command line: a thin click shell over the library packages."""

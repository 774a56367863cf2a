"""History checkers for fault tests: the linearizable single register (``register``)."""

"""Runners: one interface (:class:`edgeship.runtimes.base.Runner`), one small module per runtime."""

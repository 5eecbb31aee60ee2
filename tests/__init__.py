"""The test suite (a package, so that tests.support is importable from the repo root by bench scripts too)."""

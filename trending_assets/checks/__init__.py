"""Quality gates: data suites (Great Expectations) and model gates."""

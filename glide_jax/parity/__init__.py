"""Numerical parity with OpenAI's PyTorch reference, checked against recorded fixtures (used by tools.parity and the tests)."""

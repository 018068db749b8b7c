"""Wire-true simulators and test tooling: used by tests and the demo."""

"""amr-evol: distil code generation from a teacher LLM with AMR-Evol, on Ray."""

__version__ = "0.1.0"

"""The jobs of the method as library code: distillation and instruction construction."""

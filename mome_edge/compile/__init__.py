"""The compiler: a trained torch model -> `CompiledModel` (numpy). Torch stops here."""

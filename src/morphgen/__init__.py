"""morphgen: learn, generate and anatomically evaluate 3D brain T1 MRI."""

__version__ = "0.1.0"

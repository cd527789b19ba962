"""One package per model family: its networks, its prior, its config schema and its family class.

The catalogue (``morphgen.models.catalogue``) names each family's module; the registry imports it when asked.
"""

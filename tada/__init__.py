"""TADA: Transferable Attention for Domain Adaptation (Wang et al., AAAI 2019).

`import tada` stays light: the heavy pieces (torch models, training, data) live in submodules.
"""

__version__ = "0.1.0"

"""TADA: Transferable Attention for Domain Adaptation (Wang et al., AAAI 2019).

`import tada` stays light: the heavy pieces (torch models, training, data) live in submodules. It does one thing
besides: it pins PyTorch's CPU kernels to AVX2 (`tada.cpu_kernels`), which must happen before any kernel runs, so
that a seeded run gives the same bits on every x86-64 CPU.
"""

from tada.cpu_kernels import pin as _pin_cpu_kernels

_pin_cpu_kernels()

__version__ = "0.1.0"

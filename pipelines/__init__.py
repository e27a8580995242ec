"""Stage entry points (`python -m pipelines.<stage>`) and the Prefect flow. Importing the package imports `tada`
first, which pins the CPU kernels (`tada.cpu_kernels`) before NumPy or PyTorch loads."""

import tada  # noqa: F401

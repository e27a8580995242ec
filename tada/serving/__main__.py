"""``python -m tada.serving MODEL.onnx [--port ...]``: the HTTP service (same as ``tada serve``)."""

import sys

from tada.serving.server import main

sys.exit(main())

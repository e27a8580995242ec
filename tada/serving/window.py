"""A thread-safe window of the last ``size`` values the service saw, which its monitors summarise."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class RollingWindow(Generic[T]):
    def __init__(self, size: int, what: str) -> None:
        if size < 1:
            raise ValueError(f"{what} window must be >= 1, got {size}")
        self.window = size
        self._values: deque[T] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, values: list[T]) -> None:
        with self._lock:
            self._values.extend(values)

    def snapshot(self) -> list[T]:
        """The values in the window, oldest first."""
        with self._lock:
            return list(self._values)

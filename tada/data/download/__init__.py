"""Download, verify and extract benchmark dataset archives.

* `fetch_archive` (`fetch`) puts one verified archive in a cache directory: it reuses a cached copy whose checksum
  matches, copies a local file (air-gapped machines), or streams it from the official URLs (or a mirror) into
  ``<cache_dir>/<filename>.part`` (`http`: resumed with an HTTP ``Range`` request, retried with backoff), and
  renames the ``.part`` to its final name only once its sha256 (and md5, when given) match (`checksums`).
* `extract_archive` (`extract`) unpacks a tar/zip archive or a single ``.gz``/``.bz2``/``.xz`` file into a
  temporary directory beside the destination and renames it into place when complete. Members with absolute paths
  or ``..`` components are refused; tar members also pass `tarfile.data_filter`.
* `ensure_dataset` (`dataset`) builds one dataset directory from several archives (their contents merged, as
  official releases are laid out), marks it complete with ``.tada-complete`` and reuses it from then on without any
  network access.

Every failure is a `DownloadError` whose message names the URL or file concerned and says how to supply the
archive by hand.
"""

from tada.data.download.archive import Archive, DownloadError
from tada.data.download.dataset import MARKER, ensure_dataset
from tada.data.download.extract import extract_archive
from tada.data.download.fetch import fetch_archive

__all__ = ["Archive", "DownloadError", "MARKER", "ensure_dataset", "extract_archive", "fetch_archive"]

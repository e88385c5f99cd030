"""Download Kaggle's "A Large Scale Fish Dataset" into a local folder with ``kagglehub``.

Credentials are whatever kagglehub itself accepts (checked against kagglehub 1.0): an API token
in ``KAGGLE_API_TOKEN`` or ``~/.kaggle/access_token``, or the legacy pair ``KAGGLE_USERNAME`` +
``KAGGLE_KEY``, or ``kaggle.json`` in ``~/.kaggle`` (``$KAGGLE_CONFIG_DIR``). They are checked
before any network traffic, and the API host is probed with a short timeout first because
kagglehub's metadata calls have none: an offline machine fails in seconds, not minutes.
Every failure becomes one :class:`KaggleDownloadError` line the CLI can print as it is.
"""

from __future__ import annotations

import inspect
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

from fish_platform.data.store import IMAGE_EXTENSIONS

DEFAULT_DATASET = "crowww/a-large-scale-fish-dataset"
DEFAULT_ENDPOINT = "https://api.kaggle.com"
CREDENTIALS_HELP = (
    "set KAGGLE_API_TOKEN (a token from kaggle.com/settings), or KAGGLE_USERNAME and KAGGLE_KEY, "
    "or put kaggle.json in ~/.kaggle (or $KAGGLE_CONFIG_DIR)"
)


class KaggleDownloadError(RuntimeError):
    """The Kaggle download could not be done; the message is one line for the user."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_credentials() -> None:
    """Raise :class:`KaggleDownloadError` unless kagglehub can find credentials (no network)."""
    from kagglehub.config import get_kaggle_credentials

    try:
        credentials = get_kaggle_credentials()
    except ValueError as exc:  # a kaggle.json that is not JSON or lacks a key
        raise KaggleDownloadError(f"Kaggle credentials are invalid: {_one_line(exc)}") from exc
    if credentials is None:
        raise KaggleDownloadError(f"no Kaggle credentials found: {CREDENTIALS_HELP}")


def _api_endpoint() -> str:
    try:  # the SDK under kagglehub; honours KAGGLE_API_ENVIRONMENT
        from kagglesdk.kaggle_env import get_endpoint, get_env

        return get_endpoint(get_env())
    except Exception:  # noqa: BLE001 - an older or changed SDK: fall back to the public host
        return DEFAULT_ENDPOINT


def check_reachable(url: str, timeout: float) -> None:
    """Open (and close) a TCP connection to ``url``'s host, or to the proxy requests would use."""
    from requests.utils import get_environ_proxies

    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = get_environ_proxies(url).get(parsed.scheme) or get_environ_proxies(url).get("all")
    if proxy:
        proxied = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        via = " (through the proxy from the environment)" if proxy else ""
        raise KaggleDownloadError(
            f"cannot reach Kaggle at {url}{via}: {host}:{port}: {_one_line(exc) or type(exc).__name__}"
        ) from exc


def species_root(folder: Path) -> Path:
    """Descend through single-folder wrappers (``Fish_Dataset/Fish_Dataset``) to the species folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) != 1 or _holds_images(folder) or _holds_images(dirs[0]):
            return folder  # a folder whose only child holds images is that species' parent
        folder = dirs[0]


def _holds_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def _link_tree(source: Path, dest: Path) -> None:
    """Hard-link ``source``'s files into ``dest`` (copy where linking is impossible)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link_or_copy, dirs_exist_ok=True)


def download_kaggle(dest: Path, dataset: str = DEFAULT_DATASET, timeout: float = 10.0) -> Path:
    """Download ``dataset`` into ``dest`` and return the folder that holds the species folders.

    The result is what ``FISH_RAW_URI`` should point at. ``dest`` must be empty or hold an earlier
    finished download of the same dataset (kagglehub then only checks the version). ``timeout``
    bounds the reachability probe of the Kaggle API.
    """
    try:
        import kagglehub
        from requests import RequestException
    except ImportError as exc:
        raise KaggleDownloadError(f"kagglehub is not installed ({exc}): pip install kagglehub") from exc

    check_credentials()
    check_reachable(_api_endpoint(), timeout)
    dest = Path(dest).expanduser().resolve()
    direct = "output_dir" in inspect.signature(kagglehub.dataset_download).parameters
    try:
        if direct:  # kagglehub >= 0.3.13 writes straight into dest, no second copy in its cache
            downloaded = Path(kagglehub.dataset_download(dataset, output_dir=str(dest)))
        else:
            downloaded = Path(kagglehub.dataset_download(dataset))
            _link_tree(downloaded, dest)
            downloaded = dest
    except KaggleDownloadError:
        raise
    except FileExistsError as exc:
        raise KaggleDownloadError(
            f"{dest} is not empty and holds no finished download of {dataset}: use an empty folder"
        ) from exc
    except RequestException as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise KaggleDownloadError(
                f"Kaggle refused the credentials (HTTP {status}) for {dataset}: {CREDENTIALS_HELP}"
            ) from exc
        raise KaggleDownloadError(f"downloading {dataset} from Kaggle failed: {_one_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - kagglehub raises many kinds; the CLI needs one
        raise KaggleDownloadError(
            f"downloading {dataset} from Kaggle failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    root = species_root(downloaded)
    if not _has_images(root):
        raise KaggleDownloadError(f"the download of {dataset} in {downloaded} contains no images")
    return root

"""Connect to an existing Dask scheduler by address, failing fast when it is unreachable."""

from __future__ import annotations

from typing import Any

from distributed import Client

from lsic.pipeline.errors import ClusterError

from .config import ClusterSettings


def connect(settings: ClusterSettings, security: Any | None, client_cls: type[Client] = Client) -> Client:
    """Return a client connected to ``settings.scheduler`` within ``settings.timeout`` seconds.

    The scheduler's workers are used as they are: an existing cluster is not
    resized per stage (whoever started it decides its shape; see the documentation's cluster page).

    Raises
    ------
    ClusterError
        No address given, or the scheduler did not answer within the timeout.
    """
    address = settings.scheduler
    if not address:
        raise ClusterError(
            "cluster kind 'address' needs a scheduler address; pass --scheduler tcp://HOST:8786 "
            "or set lsic.cluster.scheduler"
        )
    address = str(address)
    if address.startswith("tls://") and security is None:
        raise ClusterError(
            f"scheduler {address} uses TLS but no certificates are configured; "
            "set lsic.cluster.tls.ca-file/cert/key"
        )
    try:
        return client_cls(address, timeout=settings.timeout, security=security, set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"could not reach the Dask scheduler at {address} within {settings.timeout:g}s; "
            "check that it is running, the address and port, firewalls and the TLS settings"
        ) from exc

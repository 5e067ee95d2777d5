"""Optional TLS for scheduler, workers and client (``distributed.security.Security``)."""

from __future__ import annotations

from typing import Any

from distributed.security import Security

from .config import ClusterSettings


def make_security(settings: ClusterSettings) -> Any | None:
    """Return the ``Security`` to use, or ``None`` for plain TCP.

    A ``security`` object passed to :func:`lsic.cluster.make_client` wins;
    otherwise TLS is on when ``lsic.cluster.tls.{ca-file,cert,key}`` are all
    set. One certificate/key pair serves the scheduler, the workers and the
    client (all signed by ``ca-file``); the files must be readable wherever a
    worker runs (a shared file system on a batch cluster).
    """
    if settings.security is not None:
        return settings.security
    if settings.tls is None:
        return None
    ca, cert, key = settings.tls
    return Security(
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=settings.require_encryption,
    )


def protocol_for(security: Any | None) -> str | None:
    """``"tls://"`` when ``security`` is set, else ``None`` (the dask default, tcp)."""
    return "tls://" if security is not None else None

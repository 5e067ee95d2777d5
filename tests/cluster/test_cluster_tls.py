"""TLS round trip with temporary certificates (made here with ``cryptography``)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import dask
import pytest

from lsic.cluster import make_client
from lsic.pipeline.errors import ClusterError

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throw-away CA and one certificate for 127.0.0.1/localhost signed by it, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("lsic test CA"))
        .issuer_name(_name("lsic test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {k: str(v) for k, v in paths.items()}


def test_tls_round_trip_local_then_address(certs):
    tls = {
        "lsic.cluster.tls.ca-file": certs["ca"],
        "lsic.cluster.tls.cert": certs["cert"],
        "lsic.cluster.tls.key": certs["key"],
    }
    with dask.config.set(tls):  # certificates from the config
        with make_client("local", workers=1, threads_per_worker=1) as client:
            address = client.scheduler.address
            assert address.startswith("tls://127.0.0.1:")
            assert all(w.startswith("tls://127.0.0.1:") for w in client.scheduler_info()["workers"])
            assert client.submit(lambda x: x + 1, 41).result() == 42
            # a second client reaches the same TLS scheduler by address
            with make_client("address", scheduler=address) as other:
                assert other.submit(pow, 2, 10).result() == 1024
    # certificates as make_client keywords; a client without them is refused with one line
    files = {"tls_ca_file": certs["ca"], "tls_cert": certs["cert"], "tls_key": certs["key"]}
    with make_client("local", workers=1, threads_per_worker=1, **files) as client:
        with pytest.raises(ClusterError) as info:
            make_client("address", scheduler=client.scheduler.address, timeout="2s")
        assert "TLS" in str(info.value) and "\n" not in str(info.value)
        # plain TCP to the TLS scheduler never completes a handshake: unreachable within the timeout
        with pytest.raises(ClusterError):
            make_client("address", scheduler=client.scheduler.address.replace("tls://", "tcp://"), timeout="2s")

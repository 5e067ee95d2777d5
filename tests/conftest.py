"""Shared fixtures: small generated image datasets and an in-process Dask client.

The images are synthetic so the suite never needs Caltech-101: each class has
its own texture (horizontal stripes, vertical stripes, rings, checkerboard)
with a random phase, frequency and noise, which HOG and LBP separate easily.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("hstripes", "vstripes", "rings", "checks")


def synthetic_image(cls: int, rng: np.random.Generator, size: tuple[int, int] = (72, 96)) -> np.ndarray:
    """A uint8 grey image whose texture identifies class ``cls`` (0..3)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.25, 0.45)
    ph = rng.uniform(0, 2 * np.pi)
    if cls == 0:
        img = np.sin(f * y + ph)
    elif cls == 1:
        img = np.sin(f * x + ph)
    elif cls == 2:
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        img = np.sin(f * np.hypot(y - cy, x - cx) + ph)
    else:
        img = np.sign(np.sin(f * x + ph) * np.sin(f * y + ph))
    img = img + rng.normal(0, 0.3, size=img.shape)
    return np.clip(127 + 90 * img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_folder_dataset(root: Path, per_class: int = 10, seed: int = 0, classes=CLASSES) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            fmt = "PNG" if i % 3 == 0 else "JPEG"
            ext = "png" if fmt == "PNG" else "jpg"
            (root / name / f"{name}_{i:03d}.{ext}").write_bytes(encode(synthetic_image(c, rng), fmt))
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """4 classes x 10 generated images, as root/<class>/<image>."""
    return make_folder_dataset(tmp_path_factory.mktemp("images") / "data")


@pytest.fixture(scope="session")
def demo_root() -> Path:
    """The small real-photo dataset the package ships."""
    from importlib import resources

    return Path(str(resources.files("lsic.pipeline") / "data" / "demo"))


@pytest.fixture(scope="session")
def session_client():
    """An in-process distributed client (threads), so tests can monkeypatch task code."""
    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture
def client(session_client):
    return session_client


@pytest.fixture(scope="session")
def s3():
    """An S3 API server on 127.0.0.1 (moto) reached through s3fs; yields the storage options.

    Tests make their own bucket: ``s3fs.S3FileSystem(**s3).mkdir(name)``.
    """
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}, "anon": False}
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    # Tests must not pick up a developer's dask/jobqueue environment.
    for key in list(os.environ):
        if key.startswith("DASK_JOBQUEUE"):
            monkeypatch.delenv(key, raising=False)

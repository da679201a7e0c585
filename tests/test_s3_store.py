"""A store on object storage: ``s3://bucket/store`` against a real S3 API on
loopback (moto's standalone server) through s3fs, credentials from the
environment only (issue 17, item 7): ingest, both build flows on a Dask cluster
of two workers writing concurrently, verify, open_store and fit."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("s3fs", reason="s3 stores need s3fs: pip install 's3fs' (the dev extra has it)")
pytest.importorskip("moto.server", reason="the S3 tests need moto's server: pip install 'moto[server]'")

from dask_processes import ROOT, dask_cluster  # noqa: E402

pytestmark = pytest.mark.slow

KEY_ID, SECRET = "reidtestkeyid0017", "reid-test-secret-0017-do-not-store"


@pytest.fixture(scope="module")
def s3_env():
    """moto's S3 server on 127.0.0.1 and the AWS_* variables a user would set; stopped at the end."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("reid-stores")
    try:
        yield env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def cli(module: str, args: list[str], api_url: str | None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m MODULE ...``: a Prefect flow run reporting to ``api_url``, or (``None``) a plain run."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=str(ROOT), **({"PREFECT_API_URL": api_url} if api_url else {}))
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{module} {args[0]}: {r.stderr[-3000:]}"
    return r


def local_store(world, path) -> str:
    from pipelines.ingest import plan_ingest, write_image_units
    from storage import create_store, image_writer

    index = plan_ingest("market1501", world, progress=False)
    s = create_store(path, dataset="market1501", index=index, image_size=(128, 64), source_root=index.attrs["root"],
                     unit_size=8)
    getattr(write_image_units, "fn", write_image_units)(s.url, index.attrs["root"],
                                                        [u[0] for u in image_writer(s).pending()])
    return s.url


def test_store_on_s3_end_to_end(s3_env, prefect_api, synthetic_world, tmp_path):
    from reid_train import fit
    from storage import open_store

    url = "s3://reid-stores/market-synth"
    cli("pipelines", ["ingest", "--dataset", "market1501", "--root", str(synthetic_world), "--store", url,
                      "--size", "128x64", "--unit-size", "16"], None)
    with dask_cluster(tmp_path / "elsewhere", n_workers=2, env=s3_env) as c:  # workers get AWS_* from their env
        common = ["--store", url, "--dask-address", c.address, "--units-per-task", "1"]
        cli("pipelines", ["build-dsap", "--estimator", "oracle", *common], prefect_api)  # Prefect + DaskTaskRunner
        cli("pipelines", ["build-mpn-priors", "--parsing", "oracle", "--segmentation", "oracle",
                          "--input-size", "128x64", *common], None)                  # plain run, Dask client
    assert "OK" in cli("storage", ["verify", url], None).stdout

    # the notebook view: same index and the very bytes a local ingest of the same folder writes
    s = open_store(url)
    ref = open_store(local_store(synthetic_world, tmp_path / "local"))
    assert s.index.equals(ref.index)
    ids = np.arange(s.n_images)
    np.testing.assert_array_equal(s.read_images(ids), ref.read_images(ids))
    assert set(s.groups) == {"estimates/oracle", "priors/dsap", "priors/mpn"}
    assert all(len(s.group(g).units_done()) == len(s.units()) for g in s.groups)
    assert url in repr(s) and url in s._repr_html_()
    from storage import views

    for show in (views.show_dsap, views.show_mpn_prior):  # the notebook's views read the priors from S3
        assert show(s, image_id=3).axes

    run = tmp_path / "run"
    assert fit.main(["--method", "baseline", "--store", url, "--out", str(run), "--backbone", "resnet18",
                     "--size", "64x32", "--pk", "4", "2", "--epochs", "1", "--max-steps", "2",
                     "--workers", "1", "--device", "cpu", "-q"]) == 0
    assert json.loads((run / "metrics.json").read_text())["final_eval"]["num_valid_queries"] > 0

    # credentials came from the environment and are nowhere in the store
    import s3fs

    fs = s3fs.S3FileSystem()
    objects = fs.find("reid-stores/market-synth")
    assert len(objects) > 3 * len(s.units())
    for key in objects:
        data = fs.cat_file(key)
        assert SECRET.encode() not in data and KEY_ID.encode() not in data, key
    assert SECRET not in (run / "config.yaml").read_text()


def test_credentials_in_the_url_are_refused(s3_env):
    from storage import open_store

    with pytest.raises(ValueError, match="holds credentials") as err:
        open_store(f"s3://{KEY_ID}:{SECRET}@reid-stores/market-synth")
    assert SECRET not in str(err.value)

"""nerfstudio's ns-export on an edited toy run, as a user runs it (a console script in a child process).

open3d, which ns-export loads, needs the system library libusb-1.0 (Debian: libusb-1.0-0); scripts/setup.sh installs
it (or stops with the command to run), so after the one set-up these commands work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def _ns_export(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / "ns-export"), *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def read_ply_vertices(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """(header properties, vertex records) of a PLY file (ASCII or binary little-endian, as open3d writes it)."""
    raw = path.read_bytes()
    end = raw.index(b"end_header") + len(b"end_header")
    end += 2 if raw[end : end + 2] == b"\r\n" else 1
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply", header[:3]
    fmt = next(line.split()[1] for line in header if line.startswith("format "))
    count, props, in_vertex = 0, {}, False
    for line in header:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            count, in_vertex = int(parts[2]), True
        elif parts and parts[0] == "element":
            in_vertex = False
        elif in_vertex and parts[:1] == ["property"]:
            props[parts[2]] = parts[1]
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4", "short": "<i2"}
    dtype = np.dtype([(name, types[kind]) for name, kind in props.items()])
    if fmt == "ascii":
        rows = raw[end:].decode("ascii").split("\n")[:count]
        data = np.array([tuple(float(v) for v in row.split()) for row in rows], dtype=dtype)
    else:
        assert fmt == "binary_little_endian", fmt
        data = np.frombuffer(raw[end : end + count * dtype.itemsize], dtype=dtype, count=count)
    return props, data


def test_open3d_imports():
    """The library ns-export needs loads (fails on a machine without libusb-1.0: run bash scripts/setup.sh)."""
    res = subprocess.run([sys.executable, "-c", "import open3d"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]


def test_ns_export_pointcloud_of_an_edited_run(toy_nerf_run, tmp_path):
    config = toy_nerf_run["edit"].get_base_dir() / "config.yml"
    out = tmp_path / "pointcloud"
    res = _ns_export(
        "pointcloud",
        "--load-config",
        str(config),
        "--output-dir",
        str(out),
        "--num-points",
        "2000",
        "--remove-outliers",
        "False",
        "--normal-method",
        "open3d",  # nerfacto without predicted normals: open3d estimates them (the default needs model normals)
        "--num-rays-per-batch",
        "1000",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "Traceback" not in res.stderr
    props, points = read_ply_vertices(out / "point_cloud.ply")
    assert {"x", "y", "z", "red", "green", "blue"} <= set(props)
    assert 2000 <= len(points) <= 3000  # nerfstudio samples whole batches of rays until it has --num-points
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)
    assert np.isfinite(xyz).all() and xyz.std(axis=0).min() > 1e-4  # a cloud, not one point


def test_ns_export_cameras_of_an_edited_run(toy_nerf_run, tmp_path):
    """ns-export cameras of the edit, read through ids-auto-data (the dataparser of ids-recon, hence of the edits of
    its runs): the same checkpoint, its config.yml with the dataparser swapped (the toy fixture names nerfstudio's
    Blender dataparser, whose cameras lack the metadata that ns-export cameras asserts; ids-auto-data sets it)."""
    import yaml
    from nerfstudio.scripts import exporter
    from refusals import in_process

    from ids_nerf.nerf.dataparsers import AutoDataParserConfig

    config = yaml.load((toy_nerf_run["edit"].get_base_dir() / "config.yml").read_text(), Loader=yaml.Loader)
    config.pipeline.datamanager.dataparser = AutoDataParserConfig(data=toy_nerf_run["data"])
    config_yml = tmp_path / "config.yml"  # its checkpoint is still the edit's (output_dir/.../nerfstudio_models)
    config_yml.write_text(yaml.dump(config))
    out = tmp_path / "cameras"
    argv = ["ns-export", "cameras", "--load-config", str(config_yml), "--output-dir", str(out)]
    res = in_process(exporter.entrypoint, argv)  # in this process: the subprocess start-up is tested above
    assert res.code == 0, res.out[-2000:] + res.err[-4000:]
    train = json.loads((out / "transforms_train.json").read_text())
    assert len(train) == 6 and np.asarray(train[0]["transform"]).shape == (3, 4)
    assert len(json.loads((out / "transforms_eval.json").read_text())) == 3  # eval_setup's test mode: the test split

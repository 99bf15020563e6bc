"""Benchmark: ``contrast generate`` over 1,000 workloads, as resources per second.

    python -m tests.generate.bench_generate [--workloads N]

Writes N contrast workloads (StatefulSets with a secure PV, Deployments with a PVC, plain
Pods; each with comments) over 10 files in a temporary directory, creates the workspace keys
first (key generation is a one-off cost, not per resource), then times the real console
script twice: the first run rewrites every file and computes every policy, the second finds
nothing to change. Target: at least 500 resources/s on the first run.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTRAST = str(Path(sys.executable).parent / "contrast")
FILES = 10
IMAGE = "ghcr.io/contrast-securepv/initializer@sha256:" + "ab" * 32

STATEFULSET = """\
---
# database {i}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db-{i}
  namespace: bench
  annotations:
    contrast.edgeless.systems/secure-pv: "state:data"
spec:
  serviceName: db-{i}
  replicas: 1
  selector:
    matchLabels:
      app: db-{i}
  template:
    metadata:
      labels:
        app: db-{i}
    spec:
      runtimeClassName: contrast-cc
      containers:
        - name: db
          image: "registry.example/db@sha256:{digest}"
          command: ["/usr/bin/db"]
          args: ["--data", "/var/lib/db"]  # data on the secure PV
          env:
            - name: DB_NAME
              value: "db-{i}"
          volumeMounts:
            - name: data
              mountPath: /var/lib/db
              mountPropagation: HostToContainer
  volumeClaimTemplates:
    - metadata:
        name: state
      spec:
        accessModes: [ReadWriteOnce]
        volumeMode: Block
        resources:
          requests:
            storage: 1Gi
"""

DEPLOYMENT = """\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-{i}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web-{i}}}
  template:
    metadata:
      labels: {{app: web-{i}}}
      annotations:
        contrast.edgeless.systems/secure-pv: "disk:files"
    spec:
      runtimeClassName: contrast-cc
      containers:
        - name: web
          image: registry.example/web@sha256:{digest}
          command: ["/web", "--port=8080"]
          ports:
            - containerPort: 8080
          volumeMounts:
            - name: files
              mountPath: /srv
              mountPropagation: HostToContainer
      volumes:
        - name: disk
          persistentVolumeClaim:
            claimName: web-{i}
"""

POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: job-{i}
spec:
  runtimeClassName: contrast-cc
  containers:
    - name: task
      image: registry.example/task@sha256:{digest}
      command: ["/task", "--once"]
"""

TEMPLATES = (STATEFULSET, DEPLOYMENT, POD)


def write_inputs(directory: Path, workloads: int) -> None:
    per_file = -(-workloads // FILES)
    for file_index in range(FILES):
        parts = []
        for i in range(file_index * per_file, min(workloads, (file_index + 1) * per_file)):
            digest = f"{i:064x}"
            parts.append(TEMPLATES[i % len(TEMPLATES)].format(i=i, digest=digest))
        (directory / f"workloads-{file_index:02d}.yaml").write_text("".join(parts))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(directory: Path, *args: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one ``contrast generate`` run (CPU is steadier when
    other processes share the machine's cores)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(
        [CONTRAST, "generate", "--initializer-image", IMAGE, *args],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.perf_counter() - start, _children_cpu() - cpu


def _report(label: str, workloads: int, seconds: tuple[float, float]) -> None:
    wall, cpu = seconds
    print(
        f"{label}: {workloads / wall:.0f} resources/s "
        f"(wall {wall:.2f} s; CPU {cpu:.2f} s = {workloads / cpu:.0f} resources/s per core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1000)
    workloads = parser.parse_args().workloads
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        root = Path(tmp)
        (root / "warmup").mkdir()
        write_inputs(root / "warmup", 3)
        run(root, "--reference-values", "simulated", "warmup")  # creates the workspace keys
        (root / "inputs").mkdir()
        write_inputs(root / "inputs", workloads)
        first = run(root, "inputs")
        second = run(root, "inputs")
    print(f"workloads: {workloads} in {FILES} files")
    _report("first run (rewrite + policies)", workloads, first)
    _report("second run (nothing to change)", workloads, second)


if __name__ == "__main__":
    main()

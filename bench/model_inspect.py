"""How long registering a local model takes in AIMA (`aima model create --source local`:
the CLI, HTTP, reading the file's header, SQLite) against the raw alternative, the format's
own reader (PyPI gguf's GGUFReader, which memory-maps the file and parses its header and
tensor infos), side by side in one run, on the 8B-parameter BF16 layout the tests use
(16 GB declared, a sparse file).

Usage: python3 bench/model_inspect.py path/to/aima [rounds]
Needs: pip install gguf safetensors numpy (ci/install-tools.sh installs them).
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import gguf

AIMA = os.path.abspath(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
HERE = os.path.dirname(os.path.abspath(__file__))
WRITER = os.path.join(HERE, "..", "aima", "tests", "clients", "write_models.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    with tempfile.TemporaryDirectory() as home:
        models = os.path.join(home, "models")
        subprocess.run([sys.executable, WRITER, models], check=True, capture_output=True)
        path = os.path.join(models, "llama8b", "llama-3-8b-bf16.gguf")
        env = dict(os.environ, AIMA_HOME=home, AIMA_ADDR=f"127.0.0.1:{free_port()}", AIMA_PORT_RANGE="14000-14099")
        daemon = subprocess.Popen([AIMA, "start"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                if subprocess.run([AIMA, "status"], env=env, capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            aima_ms, reader_ms = [], []
            for i in range(ROUNDS):
                start = time.perf_counter()
                out = subprocess.run(
                    [AIMA, "-o", "json", "model", "create", "--name", f"m{i}", "--source", "local", "--path", path],
                    env=env, capture_output=True, check=True,
                )
                aima_ms.append((time.perf_counter() - start) * 1000)
                size = json.loads(out.stdout)["size_bytes"]
                start = time.perf_counter()
                reader = gguf.GGUFReader(path)
                total = sum(int(t.n_bytes) for t in reader.tensors)
                reader_ms.append((time.perf_counter() - start) * 1000)
                assert total == size, (total, size)
            print(json.dumps({
                "file_bytes": os.path.getsize(path),
                "weights_bytes": size,
                "rounds": ROUNDS,
                "aima_model_create_ms_median": round(statistics.median(aima_ms), 1),
                "aima_model_create_ms_max": round(max(aima_ms), 1),
                "gguf_reader_ms_median": round(statistics.median(reader_ms), 1),
                "gguf_reader_ms_max": round(max(reader_ms), 1),
            }, indent=2))
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)


main()

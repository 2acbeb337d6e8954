"""Two CPU ranks on a corpus another process is preparing: every rank waits on the cache entry's lock, not in a
collective, so a wait far longer than the collectives' timeout (WARMSTART_DIST_TIMEOUT) ends in a normal run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from _corpus import make_corpus

from warmstart.data import DataSettings, build_dataset
from warmstart.data.progress import EntryLock

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="two gloo ranks through torchrun")


def test_ranks_wait_for_a_prepare_longer_than_the_collective_timeout(tmp_path, tiny_tokenizer):
    corpus = make_corpus(tmp_path / "corpus")
    tok = tmp_path / "tok.json"
    tiny_tokenizer.save(str(tok))
    ds = build_dataset([str(corpus)], DataSettings(cache_dir=str(tmp_path / "cache"), seq_len=32), tokenizer=tiny_tokenizer)
    (corpus / "more.py").write_text((corpus / "glob.py").read_text().replace("glob", "blog"))  # work to do again
    lock = EntryLock(ds.cache_path)
    assert lock.take(True)  # "another prepare" holds the entry for 12 s; the collectives time out after 3 s
    release = threading.Timer(12.0, lock.release)
    release.start()
    env = {k: v for k, v in os.environ.items() if k != "WARMSTART_DEBUG"}
    env["WARMSTART_DIST_TIMEOUT"] = "3"
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "warmstart", "pretrain", "--preset", "llama-tiny", "--data", str(corpus),
                        "--tokenizer", str(tok), "--seq-len", "32", "--batch-size", "2", "--max-steps", "1",
                        "--eval-tokens", "64", "--eval-every", "0", "--cache-dir", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "run"), "--nproc-per-node", "2"],
                       capture_output=True, text=True, env=env, timeout=240)
    release.join()
    assert p.returncode == 0, p.stdout + p.stderr
    assert time.time() - t0 > 12 and f"waiting for pid {os.getpid()}" in p.stdout, p.stdout
    assert "done: 1 steps" in p.stdout and "WS999" not in p.stdout + p.stderr

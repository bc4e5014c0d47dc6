"""The encoded cache on an object store: a real S3 API (moto's server, a subprocess on 127.0.0.1) that pyarrow's
S3FileSystem talks to. Entries are committed by their manifest alone (no folder rename on S3): the same rows as a
local cache, a hit the second time, an attempt without a manifest never read, one manifest winning a race."""

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from raysft.config import load_spec
from raysft.data.cache import new_attempt, open_entry, publish_entry, remove_stale_attempts
from raysft.data.errors import DataError
from raysft.data.prepare import prepare_cached
from raysft.local_ray import free_port
from data_helpers import write_conversations

pytestmark = pytest.mark.integration  # starts a server (and Ray, for the last test)

BUCKET = "raysft-cache"


@pytest.fixture(scope="module")
def s3_uri():
    """`prefix -> URI` of a prefix in a bucket of a moto S3 server. Credentials and endpoint ride in the URI, so any
    process (a Ray worker too) opens it without an AWS environment."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start; install the test extra (pip install -e '.[test]')")
                time.sleep(0.1)

        def uri(prefix: str, bucket: str = BUCKET) -> str:
            return f"s3://test:test@{bucket}/{prefix}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"

        fs, _ = pafs.FileSystem.from_uri(uri("") + "&allow_bucket_creation=true")
        fs.create_dir(BUCKET)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def setup(tmp_path, chat_tokenizer, s3_uri):
    tok_dir = tmp_path / "tok"
    chat_tokenizer.save_pretrained(tok_dir)
    domain = write_conversations(tmp_path / "domain.jsonl", ["yes", "no"] * 200, "domain")
    spec = load_spec({"model": {"name_or_path": "x"}, "data": {
        "train": [domain], "validation_split": 0.1, "max_seq_len": 64, "template_date": "2026-03-01"}})
    return spec, str(tok_dir), tmp_path, s3_uri(f"cache-{uuid.uuid4().hex[:8]}")


def _rows(entry, split):
    store = entry.examples(split)
    return [store[i] for i in range(len(store))]


def test_an_s3_cache_reads_back_the_local_caches_rows_and_a_second_prepare_hits(setup, chat_tokenizer, monkeypatch):
    spec, tok_dir, tmp, cache = setup
    monkeypatch.chdir(tmp)  # a URI once became the local folder ./s3:/...
    local, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "local", use_ray=False)
    entry, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
    assert not hit and isinstance(entry.fs, pafs.S3FileSystem) and not (tmp / "s3:").exists()
    # Printed and recorded without the URI's credentials and options; the key goes after the prefix.
    prefix = cache.split("@")[1].split("?")[0]  # raysft-cache/cache-<id>
    assert entry.key == local.key and entry.location == f"s3://{prefix}/{entry.key}"
    assert _rows(entry, "train") == _rows(local, "train") and _rows(entry, "validation") == _rows(local, "validation")
    assert entry.validation_conversations(limit=4) == local.validation_conversations(limit=4)
    again, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
    assert hit and again.shards_dir == entry.shards_dir and _rows(again, "train") == _rows(local, "train")


def test_an_attempt_without_its_manifest_is_never_read_and_is_swept_once_stale(setup, chat_tokenizer):
    spec, tok_dir, _, cache = setup
    entry, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
    # A job killed before its manifest: every shard written, no commit marker. Not an entry.
    entry.fs.delete_file(f"{entry.shards_dir.rsplit('/', 1)[0]}/manifest.json")
    assert open_entry(cache, entry.key) is None
    rebuilt, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
    assert not hit and rebuilt.shards_dir != entry.shards_dir
    assert remove_stale_attempts(cache, older_than_s=3600) == []  # the killed job's attempt is fresh yet
    assert remove_stale_attempts(cache, older_than_s=0) == [entry.shards_dir]  # the published one stays
    assert open_entry(cache, entry.key).shards_dir == rebuilt.shards_dir
    # A manifest whose attempt lost a shard is not an entry either.
    rebuilt.fs.delete_file(f"{rebuilt.shards_dir}/{rebuilt.split('train')['shards'][0]['file']}")
    assert open_entry(cache, entry.key) is None


def test_two_builders_of_one_key_both_finish_on_one_entry(setup, chat_tokenizer):
    spec, tok_dir, _, cache = setup
    entry, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
    late = new_attempt(cache, entry.key)  # a second job, building while the first published
    kept = publish_entry(late, entry.manifest)
    assert kept.shards_dir == entry.shards_dir and _rows(kept, "train") == _rows(entry, "train")
    assert entry.fs.get_file_info(late.dir).type == pafs.FileType.NotFound  # its own attempt dropped


def test_an_unwritable_or_unopenable_cache_uri_is_one_line_naming_it(setup, chat_tokenizer, s3_uri):
    spec, tok_dir, _, _ = setup
    for cache, why in ((s3_uri("cache", bucket="no-such-bucket"), "cannot (read|write)"),
                       ("nosuch://bucket/cache", "nosuch://bucket/cache: cannot be opened")):
        with pytest.raises(DataError, match=f"^data.cache_dir: {why}") as err:
            prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=False)
        assert cache.split("?")[0].replace("test:test@", "") in str(err.value) and "\n" not in str(err.value)
        assert "test:test" not in str(err.value)  # credentials in the URI are never printed


def test_ray_data_encodes_into_the_s3_cache_and_workers_read_the_same_rows(setup, chat_tokenizer, ray_address):
    # The encode actors write their shards through the filesystem the driver resolved (pickled with the URI's
    # credentials and endpoint), then the driver commits the manifest.
    from raysft.train.rundata import open_run_data

    spec, tok_dir, tmp, cache = setup
    local, _ = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, tmp / "local", use_ray=False)
    entry, hit = prepare_cached(spec.data, 0, chat_tokenizer, tok_dir, cache, use_ray=True)
    assert not hit and _rows(entry, "train") == _rows(local, "train")
    assert _rows(open_run_data(cache, entry.key), "validation") == _rows(local, "validation")  # as a worker opens it

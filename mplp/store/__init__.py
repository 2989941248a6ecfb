"""The results store: run directories, manifests and checkpoint records, locks, the result
cache.  It reads only data: regular files of bounded size, never through a symbolic link,
tensors unpickled with ``weights_only=True``, every file verified before use.  Depends on
``mplp.core`` (configs) and ``mplp.paths``."""

from mplp.store.files import (  # noqa: F401
    check_writable, DamagedResultError, load_torch, MANIFEST, MAX_TENSOR_BYTES, MAX_TEXT_BYTES,
    open_stored, read_csv, read_json, read_text, refuse_links, RunLockedError, SAFE_GLOBALS,
    save_torch, StoreError, verify_manifest, write_csv, WRITE_ERRORS, write_json, write_manifest,
    write_text)
from mplp.store.locks import (  # noqa: F401
    RunLock)
from mplp.store.runs import (  # noqa: F401
    CHECKPOINT, CHECKPOINT_RECORD, FINAL_STATE, find_run, load_checkpoint, load_final_state,
    load_run, own_files, run_dir, RUN_FILES, RunResult, save_checkpoint, verify_run)
from mplp.store.cache import (  # noqa: F401
    committed_root, key_hash, load_or_compute, machine_record, MissingResultError, Record,
    result_dir)

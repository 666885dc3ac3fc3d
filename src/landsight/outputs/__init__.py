"""Safe outputs: every file landsight writes is written atomically and never replaces what a user owns.

One package, three modules:

* :mod:`~landsight.outputs.atomic`: atomic writes, recognisable temporary names, strict JSON.
* :mod:`~landsight.outputs.ownership`: manifests of what landsight made.
* :mod:`~landsight.outputs.plan`: each command's output plan, checked before any work
  (:func:`check_plan`), committed after (:func:`commit_plan`), folders written whole
  (:func:`staged_folder`).
"""

from landsight.outputs.atomic import (
    TMP_PREFIX,
    atomic_path,
    check_output,
    json_safe,
    remove_stale_tmp,
    same_file,
    scratch_dir,
    tmp_name,
    write_json,
)
from landsight.outputs.ownership import (
    FILES_MANIFEST,
    MANIFEST,
    bundle_root,
    mark_file,
    mark_folder,
    owned_file,
    owned_folder,
    read_manifest,
)
from landsight.outputs.plan import Output, OutputKind, OutputPlan, check_plan, commit_plan, staged_folder

__all__ = [
    "FILES_MANIFEST", "MANIFEST", "TMP_PREFIX", "Output", "OutputKind", "OutputPlan", "atomic_path", "bundle_root",
    "check_output", "check_plan", "commit_plan", "json_safe", "mark_file", "mark_folder", "owned_file",
    "owned_folder", "read_manifest", "remove_stale_tmp", "same_file", "scratch_dir", "staged_folder", "tmp_name",
    "write_json",
]  # fmt: skip

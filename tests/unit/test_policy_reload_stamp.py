"""The reload job's cheap look at the policy files: read and hash them only when it changed."""

from __future__ import annotations

import os
from pathlib import Path

from image_updater.daemon.service import _hash_policies, _stat_policies


def _configmap(root: Path, version: str, text: str) -> None:
    """A Kubernetes ConfigMap volume: files are symlinks into ..data, itself a symlink that
    an update swaps atomically to a new timestamped directory."""
    data = root / f"..{version}"
    data.mkdir()
    (data / "app.yaml").write_text(text, encoding="utf-8")
    tmp = root / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, root / "..data")
    if not (root / "app.yaml").is_symlink():
        (root / "app.yaml").symlink_to("..data/app.yaml")


def test_untouched_files_keep_their_stamp_and_an_edit_changes_it(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("app: a\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")
    before = _stat_policies([str(tmp_path)])
    assert _stat_policies([str(tmp_path)]) == before
    assert [Path(s[0]).name for s in before] == ["a.yaml"]

    (tmp_path / "a.yaml").write_text("app: b\n", encoding="utf-8")  # same size, new content
    assert _stat_policies([str(tmp_path)]) != before
    (tmp_path / "b.yml").write_text("app: c\n", encoding="utf-8")
    assert len(_stat_policies([str(tmp_path)])) == 2


def test_a_configmap_update_changes_the_stamp_and_the_hash(tmp_path: Path) -> None:
    _configmap(tmp_path, "2026_01", "app: a\n")
    stamp, digest = _stat_policies([str(tmp_path)]), _hash_policies([str(tmp_path)])
    _configmap(tmp_path, "2026_02", "app: b\n")  # same size: only the link target moved
    assert _stat_policies([str(tmp_path)]) != stamp
    assert _hash_policies([str(tmp_path)]) != digest

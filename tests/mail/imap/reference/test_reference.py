"""The scripted sessions of corpus/scripts replayed against Dovecot and against us."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mail.imap.reference import dovecot
from tests.mail.imap.reference.compare import apply_masks, differences, load_allowlist, load_masks
from tests.mail.imap.reference.conftest import SCRIPT_PATHS
from tests.mail.imap.reference.normalize import normalize
from tests.mail.imap.reference.runner import load_script, run_script
from tests.support.imap_server import ServerThread

ALLOW = load_allowlist()
MASKS = load_masks()


def test_corpus_is_large_enough() -> None:
    assert len(SCRIPT_PATHS) >= 80


@pytest.mark.parametrize("path", SCRIPT_PATHS, ids=[p.stem for p in SCRIPT_PATHS])
def test_script(
    path: Path, reference_dovecot: dovecot.Dovecot, reference_ours: ServerThread
) -> None:
    script = load_script(path)
    user = f"{path.stem}@example.test"
    with ThreadPoolExecutor(2) as pool:
        theirs_f = pool.submit(run_script, "127.0.0.1", reference_dovecot.port, user, script)
        ours_f = pool.submit(run_script, reference_ours.host, reference_ours.port, user, script)
        theirs = apply_masks(path.stem, normalize(theirs_f.result()), MASKS)
        ours = apply_masks(path.stem, normalize(ours_f.result()), MASKS)
    problems = differences(path.stem, theirs, ours, ALLOW)
    if problems:
        pytest.fail(
            f"{len(problems)} difference(s) from Dovecot in {path.name}:\n"
            + "\n".join(problems[:20])
            + "\n--- ours:\n"
            + "\n".join(ours)[:6000]
        )

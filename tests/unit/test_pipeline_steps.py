"""The thin gate steps of :mod:`exfm.pipeline` that need no service: the augmented gate is skipped
(no GX run, no bucket) when DAS was, and the report gets only the gates that have Data Docs."""

from exfm import pipeline
from exfm.config import ExfmConfig


def test_gate_augmented_is_skipped_when_das_was():
    lines = []
    out = pipeline.gate_augmented(ExfmConfig(), "2026-01-01", log=lines.append,
                                  augmented={"day": "2026-01-01", "skipped": True,
                                             "fm_version": None})
    assert out == {"gate": "augmented", "day": "2026-01-01", "ok": True, "skipped": True,
                   "docs_url": None}
    assert "skipped" in lines[0] and "no FM" in lines[0]


def test_docs_links_keeps_the_gates_with_a_page():
    raw = {"gate": "raw", "docs_url": "http://127.0.0.1:8333/b/docs/raw/2026-01-02.html"}
    skipped = {"gate": "augmented", "skipped": True, "docs_url": None}
    assert pipeline.docs_links(raw, skipped, None) == {"raw gate": raw["docs_url"]}
    assert pipeline.docs_links() == {}

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


def test_the_calendar_ends_with_the_data_only_where_every_day_is_known(tmp_path):
    """Generated data and MovieLens end at their last day; a `dir` source is open-ended (live days
    keep landing), and `exfm demo`, which replays a folder's days, pins it to the folder's last
    day unless schedule.end_date says otherwise."""
    from exfm.commands.demo import pin_calendar
    from exfm.config import load_config

    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        (tmp_path / f"day={day}").mkdir()

    def cfg(source, *sets):
        return load_config(None, [f"data.source={source}", f"data.dir={tmp_path}", *sets],
                           env={})

    assert pipeline.schedule_window(cfg("movielens")) == ("2026-03-01", "2026-03-03")
    live = cfg("dir")
    assert pipeline.schedule_window(live) == ("2026-03-01", None)
    pinned, end = pin_calendar(live, ["2026-03-01", "2026-03-02", "2026-03-03"])
    assert end == "2026-03-03" and pipeline.schedule_window(pinned) == ("2026-03-01", "2026-03-03")
    assert live.schedule.end_date is None  # the caller's config is not changed
    chosen = cfg("dir", "schedule.end_date=2026-03-09")
    assert pin_calendar(chosen, ["2026-03-01"]) == (chosen, None)
    gen = cfg("generate")
    assert pin_calendar(gen, ["2026-03-01"]) == (gen, None)

"""How big every workload is: issues 4, 13 and part two (``FULL``), and tiny (``QUICK``)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Config:
    """How many rounds, messages, tasks and sessions each workload uses."""

    latency_rounds: int
    latency_messages: int
    latency_saves: int
    contended_rounds: int
    contended_messages: int
    contended_tasks: int
    contended_saves: int
    many_rounds: int
    many_sessions: int
    many_saves: int
    many_max_messages: int
    usage_rounds: int
    usage_records: int
    usage_tasks: int
    usage_sessions: int
    live_actors: int
    live_wave: int
    churn_ids: int
    churn_wave: int
    churn_idle_timeout: float
    # Issue 13 (``bench/revisions.py``). Rounds of the one-message save: a
    # multiple of 6, so each of the 6 orders of its three runs comes as often.
    save_rounds: int
    save_messages: int
    save_count: int
    life_rounds: int
    life_steps: int
    fork_rounds: int
    fork_messages: int
    fork_count: int
    # Part two, for a UI (``bench/ui.py``). Listing: sessions in the root, the
    # page size, rounds (each: the pages' calls, then one full scan, in turns)
    # and timed calls of each page a round.
    ui_sessions: int
    ui_page_size: int
    ui_list_rounds: int
    ui_page_calls: int
    # The index's cost to a save: rounds (even: each store goes first as
    # often), the session's messages, timed saves per store.
    ui_save_rounds: int
    ui_save_messages: int
    ui_save_count: int
    # Watch latency: rounds, writes by the child process per run, seconds between them.
    ui_watch_rounds: int
    ui_watch_writes: int
    ui_watch_interval: float
    # update_session against flock + read + rewrite: rounds, increments, tasks, messages.
    ui_counter_rounds: int
    ui_counter_increments: int
    ui_counter_tasks: int
    ui_counter_messages: int


FULL = Config(
    latency_rounds=7,
    latency_messages=200,
    latency_saves=30,
    contended_rounds=5,
    contended_messages=200,
    contended_tasks=64,
    contended_saves=10,
    many_rounds=5,
    many_sessions=1000,
    many_saves=5,
    many_max_messages=40,
    usage_rounds=3,
    usage_records=10_000,
    usage_tasks=500,
    usage_sessions=5,
    live_actors=10_000,
    live_wave=500,
    churn_ids=100_000,
    churn_wave=1000,
    churn_idle_timeout=0.05,
    save_rounds=12,
    save_messages=200,
    save_count=40,
    life_rounds=3,
    life_steps=2000,
    fork_rounds=4,
    fork_messages=10_000,
    fork_count=8,
    ui_sessions=100_000,
    ui_page_size=50,
    ui_list_rounds=3,
    ui_page_calls=100,
    ui_save_rounds=12,
    ui_save_messages=200,
    ui_save_count=40,
    ui_watch_rounds=2,
    ui_watch_writes=500,
    ui_watch_interval=0.005,
    ui_counter_rounds=3,
    ui_counter_increments=2000,
    ui_counter_tasks=64,
    ui_counter_messages=200,
)

# A few seconds for every workload, so the smoke test keeps this code from
# rotting; its figures mean nothing.
QUICK = Config(
    latency_rounds=1,
    latency_messages=20,
    latency_saves=3,
    contended_rounds=1,
    contended_messages=20,
    contended_tasks=8,
    contended_saves=3,
    many_rounds=1,
    many_sessions=20,
    many_saves=2,
    many_max_messages=5,
    usage_rounds=1,
    usage_records=200,
    usage_tasks=20,
    usage_sessions=2,
    live_actors=200,
    live_wave=100,
    churn_ids=1000,
    churn_wave=250,
    churn_idle_timeout=0.05,
    save_rounds=1,
    save_messages=20,
    save_count=3,
    life_rounds=1,
    life_steps=30,
    fork_rounds=1,
    fork_messages=50,
    fork_count=2,
    ui_sessions=2000,
    ui_page_size=50,
    ui_list_rounds=1,
    ui_page_calls=5,
    ui_save_rounds=2,
    ui_save_messages=20,
    ui_save_count=3,
    ui_watch_rounds=1,
    ui_watch_writes=20,
    ui_watch_interval=0.005,
    ui_counter_rounds=1,
    ui_counter_increments=256,
    ui_counter_tasks=64,
    ui_counter_messages=20,
)

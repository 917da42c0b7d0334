"""The store's counters: kept by the actors and the runner, reported by ``statistics()``."""

from __future__ import annotations

import attrs

from .storage.protocol import IoCounts

__all__ = ["Counters", "StoreStatistics"]


@attrs.define(eq=False)
class Counters:
    """What a store's actors and worker trips have done so far (live state is not here).

    ``io`` adds up what each batch's storage reported; ``live_actors`` is
    not counted at all: :meth:`SessionStore.statistics` takes it from the
    routing table when asked.
    """

    actors_started: int = 0
    actor_crashes: int = 0
    batches: int = 0
    thread_hops: int = 0
    saves_requested: int = 0
    appends_requested: int = 0
    max_mailbox_depth: int = 0
    io: IoCounts = attrs.field(factory=IoCounts)

    def report(self, *, live_actors: int) -> StoreStatistics:
        return StoreStatistics(
            live_actors=live_actors,
            actors_started=self.actors_started,
            actor_crashes=self.actor_crashes,
            batches=self.batches,
            thread_hops=self.thread_hops,
            saves_requested=self.saves_requested,
            appends_requested=self.appends_requested,
            max_mailbox_depth=self.max_mailbox_depth,
            **attrs.asdict(self.io),
        )


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """A snapshot of the store's counters (trio's ``statistics()`` convention).

    Attributes:
        live_actors: actors running now.
        actors_started: actors ever started by this store.
        actor_crashes: actors that failed with an unexpected error.
        batches: batches of messages served, each under one hold of its
            session's lock.
        thread_hops: trips to a worker thread; under load one trip serves the
            batches of several sessions, so it is lower than ``batches``.
        saves_requested: calls of save_runtime_session and checkpoint_runtime_session.
        snapshots_written: snapshot files written (coalescing makes it lower).
        journal_appends: appends of new messages to transcript journals.
        journal_rewrites: transcript journals written whole (a first save, an
            edit or removal of messages, another process's write, an upgrade).
        appends_requested: calls of append_token_usage_record.
        append_batches: writes to token-usage logs (group commit makes it lower).
        fsyncs: fsync calls on files and directories.
        bytes_written: bytes written to snapshots, journals and logs.
        max_mailbox_depth: the most messages one actor has taken in one batch.
    """

    live_actors: int
    actors_started: int
    actor_crashes: int
    batches: int
    thread_hops: int
    saves_requested: int
    snapshots_written: int
    journal_appends: int
    journal_rewrites: int
    appends_requested: int
    append_batches: int
    fsyncs: int
    bytes_written: int
    max_mailbox_depth: int

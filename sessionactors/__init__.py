"""sessionactors: persist AI-agent sessions from trio runtimes, one actor per session.

Every public name is re-exported here.
"""

from ._errors import ActorCrashedError as ActorCrashedError
from ._errors import CorruptSessionError as CorruptSessionError
from ._errors import InvalidSessionIdError as InvalidSessionIdError
from ._errors import RevisionNotFoundError as RevisionNotFoundError
from ._errors import SessionExistsError as SessionExistsError
from ._errors import SessionNotFoundError as SessionNotFoundError
from ._errors import SessionStoreError as SessionStoreError
from ._errors import StoreClosedError as StoreClosedError
from ._errors import UnsupportedFormatError as UnsupportedFormatError
from ._errors import VersionConflictError as VersionConflictError
from ._model import Change as Change
from ._model import Message as Message
from ._model import Revision as Revision
from ._model import Session as Session
from ._model import SessionSummary as SessionSummary
from ._stats import StoreStatistics as StoreStatistics
from ._store import RuntimeSessionPersistence as RuntimeSessionPersistence
from ._store import SessionStore as SessionStore
from ._store import open_store as open_store

__version__ = "0.1.0"

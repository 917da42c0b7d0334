"""sessionactors for the OpenAI Agents SDK: ``AgentsSession``, the SDK's ``Session`` on a store.

Needs the ``agents`` extra (``pip install 'sessionactors[agents]'``, which
brings ``openai-agents``). README's "With the OpenAI Agents SDK" shows a run and says how items
map to messages and what is safe across processes.
"""

from ._session import AgentsSession as AgentsSession

__all__ = ["AgentsSession"]

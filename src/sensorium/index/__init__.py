"""A persistent index of items of any modality in one model's shared space, and search over it (any-to-any, with
modality and metadata filters): the one implementation behind `sensorium index`, `sensorium search`, the server
and the Python API."""

from sensorium.index.content import ContentError, read_content
from sensorium.index.meta import Record
from sensorium.index.search import Hit, allowed, parse_where, query_vector, search, search_vectors
from sensorium.index.store import Index, IndexStateError, build, ensure, is_index
from sensorium.index.vectors import set_search_threads

__all__ = ["ContentError", "Hit", "Index", "IndexStateError", "Record", "allowed", "build", "ensure", "is_index", "parse_where",
           "query_vector", "read_content", "search", "search_vectors", "set_search_threads"]

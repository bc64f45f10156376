"""Feature vectors' wire form: what the core packs is what msgpack reads and writes."""

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from processors._core import FEATURE_NAMES, FeatureVector
from processors.vectors import pack_vectors, unpack_vectors

values = st.lists(
    st.floats(allow_nan=False), min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)
)
vectors = st.lists(
    st.builds(
        FeatureVector, st.text(max_size=40), st.floats(allow_nan=False), values, st.booleans()
    ),
    max_size=20,
)


@given(vectors)
def test_packed_vectors_are_the_msgpack_document_and_read_back(found: list[FeatureVector]) -> None:
    rows = [[v.user_id, v.as_of, list(v.values), v.refresh] for v in found]
    assert pack_vectors(found) == msgpack.packb({"features": list(FEATURE_NAMES), "rows": rows})
    assert unpack_vectors(pack_vectors(found)) == found

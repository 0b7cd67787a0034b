import pytest


@pytest.fixture(autouse=True)
def _clean(clean_db: None) -> None:
    """Every integration test starts from empty tables."""

"""In-process fakes of the PSPs' HTTP APIs (only the endpoints our adapters use)."""
